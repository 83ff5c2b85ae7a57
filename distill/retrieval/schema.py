"""`retrieval.*`: BM25 candidates (distill/retrieval/candidates.py) and the lexical features' tokenisation."""

from __future__ import annotations

from dataclasses import dataclass, field

from distill.config import DaskConfig, check, check_choice

# bm25s's scoring variants
METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")


ENGINES = ("bm25s", "tantivy")


@dataclass
class RetrievalConfig:
    # bm25s: in memory, pruned and exact (bm25s's exhaustive top k to the bit); tantivy: a Rust index on disk in
    # the workspace (index/), at tantivy's fixed k1=1.2 b=0.75 (retrieval=tantivy selects both), which scores
    # every matching document (tantivy-py collects through a MultiCollector, which turns block-max WAND off)
    engine: str = "bm25s"
    k: int = 100
    # queries searched and written (one Parquet row group) at a time: memory holds a few chunks' candidates (at
    # 100x the sample world, 2,000 took the time 10,000 took on 2 threads, at 1.2 GB peak instead of 1.7)
    chunk_queries: int = 2_000
    # chunks searched at once: on threads for tantivy (its search runs outside Python's lock), on forked
    # processes for bm25s (Linux; its search runs in Python); null: every core
    threads: int | None = None
    # Which qrels splits get candidates; null: every split the dataset has.
    splits: list[str] | None = None
    method: str = "lucene"
    k1: float = 1.5
    b: float = 0.75
    # A PyStemmer language ("english") or null for none.
    stemmer: str | None = "english"
    # "en", another bm25s stop-word language, or null for none.
    stopwords: str | None = "en"
    lowercase: bool = True
    # Which document fields are indexed (concatenated).
    fields: list[str] = field(default_factory=lambda: ["title", "text"])
    # search the queries' chunks on a Dask cluster (null: here; local: a LocalCluster; tcp://host:8786)
    dask: DaskConfig = field(default_factory=DaskConfig)

    def __post_init__(self) -> None:
        check(self.k >= 1, "retrieval.k", self.k, "must be >= 1")
        check(self.chunk_queries >= 1, "retrieval.chunk_queries", self.chunk_queries, "must be >= 1")
        check(
            self.threads is None or self.threads >= 1,
            "retrieval.threads",
            self.threads,
            "must be >= 1 or null",
        )
        # past ~100 term frequency no longer saturates at all; far past it the scores overflow to inf
        check(0 <= self.k1 <= 100, "retrieval.k1", self.k1, "must be in [0, 100] (BM25 uses 0.5-3)")
        check(0 <= self.b <= 1, "retrieval.b", self.b, "must be in [0, 1]")
        check(bool(self.fields), "retrieval.fields", self.fields, "name at least one document field")
        check_choice(self, "retrieval", "method", METHODS)
        check_choice(self, "retrieval", "engine", ENGINES)
        if self.engine == "tantivy":
            check(
                (self.k1, self.b, self.method) == (1.2, 0.75, "lucene"),
                "retrieval.engine",
                self.engine,
                f"tantivy scores with Lucene's BM25 at k1=1.2 b=0.75 (not configurable there), but retrieval.k1="
                f"{self.k1} retrieval.b={self.b} retrieval.method={self.method}: use retrieval=tantivy (which sets "
                f"them) or retrieval.engine=bm25s",
            )
        if self.stemmer is not None:
            import Stemmer

            langs = Stemmer.algorithms()
            check(
                self.stemmer in langs,
                "retrieval.stemmer",
                self.stemmer,
                f"use null or a PyStemmer language: {', '.join(langs)}",
            )
        if self.stopwords is not None:
            check(
                known_stopwords(self.stopwords),
                "retrieval.stopwords",
                self.stopwords,
                "use null or a bm25s stop-word language (en, en_plus, de, nl, fr, es, pt, it, ru, sv, no, zh, tr, ko, da)",
            )


def known_stopwords(language: str) -> bool:
    """Whether bm25s has a stop-word list for `language` (asked to bm25s itself)."""
    from bm25s.tokenization import _infer_stopwords

    try:
        return bool(_infer_stopwords(language)) and language not in (True, False)
    except (ValueError, TypeError):
        return False
