"""`make train-student`: see distill/students/."""

from distill.cli import entry
from distill.students.stage import run

if __name__ == "__main__":
    entry(run)
