"""`make teacher-score`: see distill/teacher/scoring.py."""

from distill.cli import entry
from distill.teacher.scoring import run

if __name__ == "__main__":
    entry(run)
