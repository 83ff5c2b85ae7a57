"""`make loadtest`: see distill/serving/loadtest.py."""

from distill.cli import entry
from distill.serving.loadtest import run

if __name__ == "__main__":
    entry(run)
