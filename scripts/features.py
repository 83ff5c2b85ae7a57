"""`make features`: see distill/features/build.py."""

from distill.cli import entry
from distill.features.build import run

if __name__ == "__main__":
    entry(run)
