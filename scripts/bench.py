"""`make bench`: throughput benchmarks, one JSON line per setting (see distill/teacher/bench.py)."""

from distill.teacher.bench import main

if __name__ == "__main__":
    main()
