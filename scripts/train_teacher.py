"""`make train-teacher`: see distill/teacher/train.py."""

from distill.cli import entry
from distill.teacher.train import run

if __name__ == "__main__":
    entry(run)
