"""`make data`: see distill/data/stage.py."""

from distill.cli import entry
from distill.data.stage import run

if __name__ == "__main__":
    entry(run)
