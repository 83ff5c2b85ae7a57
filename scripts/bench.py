"""`make bench`: see distill/bench/cli.py."""

from distill.bench.cli import main

if __name__ == "__main__":
    main()
