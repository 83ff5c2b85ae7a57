"""`make bench`: throughput benchmarks, one JSON line per setting (see distill/bench.py)."""

from distill.bench import main

if __name__ == "__main__":
    main()
