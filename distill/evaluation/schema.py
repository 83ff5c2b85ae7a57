"""`evaluate.*`: `make evaluate` and its cascade simulation (distill/evaluation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from distill.config import check, check_positive


@dataclass
class LoadConfig:
    """The cascade simulation's load profile (`evaluate.load.*`, distill.evaluation.cascade): Poisson arrivals at a
    rate that is a fraction of the capacity of the most expensive static setting, with bursts, served FIFO."""

    duration_s: float = 120.0
    base_utilisation: float = 0.5
    burst_utilisation: float = 1.6
    burst_every_s: float = 30.0
    burst_s: float = 8.0
    workers: int = 1
    seed: int = 0

    KEY: ClassVar[str] = "evaluate.load"  # where errors say the value is

    def __post_init__(self) -> None:
        key = self.KEY
        check_positive(self, key, "duration_s", "base_utilisation", "burst_utilisation", "burst_every_s")
        check(self.workers >= 1, f"{key}.workers", self.workers, "must be >= 1")
        check(
            0 <= self.burst_s <= self.burst_every_s,
            f"{key}.burst_s",
            self.burst_s,
            f"must be in [0, {key}.burst_every_s]",
        )


@dataclass
class EvaluateConfig:
    """`make evaluate` (distill/evaluation/stage.py)."""

    split: str = "test"
    # Latency: median over this many queries of scoring their top `latency_candidates` BM25 candidates.
    latency_queries: int = 30
    latency_candidates: int = 100
    # Cascade grid: student reranks BM25's top N, teacher reranks the student's top k (0 = teacher off).
    cascade_n: list[int] = field(default_factory=lambda: [50, 100])
    cascade_k: list[int] = field(default_factory=lambda: [0, 5, 10, 20, 30, 50])
    # Which student the cascade uses ("" = the best by nDCG@10).
    cascade_student: str = ""
    # Per-query latency budgets of the dynamic policy, and the p99 budget for the recommended setting.
    sla_ms: list[float] = field(default_factory=lambda: [20.0, 40.0, 80.0])
    p99_budget_ms: float = 60.0
    load: LoadConfig = field(default_factory=LoadConfig)
    # Students that also retrieve (bi-encoder, multi-vector, sparse) are searched over the whole corpus: top k.
    retrieve_k: int = 100
    # Lexical baselines beside `bm25`: `bm25_wordpiece`, BM25 over the teacher's own sub-word tokens (one more
    # BM25 index of the corpus, built at evaluation).
    lexical_baselines: bool = True

    def __post_init__(self) -> None:
        check_positive(
            self, "evaluate", "latency_queries", "latency_candidates", "p99_budget_ms", "retrieve_k"
        )
        check(all(n > 0 for n in self.cascade_n), "evaluate.cascade_n", self.cascade_n, "each must be > 0")
        check(all(k >= 0 for k in self.cascade_k), "evaluate.cascade_k", self.cascade_k, "each must be >= 0")
        check(all(b > 0 for b in self.sla_ms), "evaluate.sla_ms", self.sla_ms, "each must be > 0")
