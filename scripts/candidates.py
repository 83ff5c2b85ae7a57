"""`make candidates`: see distill/retrieval/candidates.py."""

from distill.cli import entry
from distill.retrieval.candidates import run

if __name__ == "__main__":
    entry(run)
