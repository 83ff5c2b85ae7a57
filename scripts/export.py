"""`make export`: see distill/export/stage.py."""

from distill.cli import entry
from distill.export.stage import run

if __name__ == "__main__":
    entry(run)
