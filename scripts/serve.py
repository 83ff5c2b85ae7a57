"""`make serve`: see distill/serving/stage.py."""

from distill.cli import entry
from distill.serving.stage import run

if __name__ == "__main__":
    entry(run)
