"""`make dashboard`: see distill/dashboard.py."""

from distill.cli import entry
from distill.dashboard import run

if __name__ == "__main__":
    entry(run)
