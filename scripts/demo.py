"""`make demo`: see distill/demo.py."""

from distill.cli import entry
from distill.demo import run

if __name__ == "__main__":
    entry(run)
