"""The project's benchmarks, behind one CLI (`make bench`, distill/bench/cli.py): teacher scoring against
sentence-transformers (teacher.py), engine precisions of a workspace's teacher (precision.py), GBDT students and
objectives (students.py), the pipeline at scale (scale.py); one timing helper and the machine's description
(timing.py). Figures are ratios measured in one run; every record lands in bench.json."""
