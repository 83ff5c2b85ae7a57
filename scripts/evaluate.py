"""`make evaluate`: see distill/evaluation/stage.py."""

from distill.cli import entry
from distill.evaluation.stage import run

if __name__ == "__main__":
    entry(run)
