"""BM25 candidates through tantivy (Rust; the index on disk, 52 bytes per document on the sample world against
bm25s's 228 in memory), with exactly the tokenisation of the project's bm25s index.

tantivy-py's `Searcher.search` always collects through a `MultiCollector`, which visits every matching document:
tantivy's block-max WAND runs only under its plain top-docs collector, so from Python this search is exhaustive
(on the sample world at 100x, asking for the top 10, the top 126 or every match costs the same). The pruned
engine is `BM25Index.search` (MaxScore and impact lists, exact).

Texts get the terms of bm25s's own tokenizer with the configured lower-casing, stop words and stemmer, so both
engines see the same terms: ASCII texts through the same tokenisation written as a tantivy analyzer (run in Rust
by the indexing threads; checked against bm25s on the corpus's first texts, `rust_analyzer`), the others
tokenised here in chunks and given to tantivy as tokens (so the corpus is never held as tokens at once). tantivy
scores with Lucene's BM25 at k1 = 1.2, b = 0.75 (tantivy-py does not expose them; the retrieval schema refuses
other values for this engine) and multiplies by (k1 + 1), which bm25s's `lucene` method leaves out: scores here
are divided by (k1 + 1), so the `bm25` column means the same under either engine (up to tantivy's one-byte
document-length norms). Ties at the k-th score go to the first positions, whatever the order of the segments.
Written by hand because no library offers this bridge: it is the glue between bm25s's tokens and tantivy's index.

The index lives in a folder (`path`); `TantivyIndex.open` reuses one built before from the same texts and options
(a marker file records their fingerprint), so candidates, serving and Dask workers share one build.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import ConfigError

log = logging.getLogger(__name__)

K1, B = 1.2, 0.75  # tantivy's BM25 parameters
CHUNK = 20_000  # texts tokenised and indexed per step
MARKER = ".distill-index.json"


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# the index's own analyzer: the project's tokenisation in Rust (`Tokenizer.tantivy_analyzer`)
ANALYZER = "distill"
# ASCII texts on which the Rust analyzer must give bm25s's tokens before it indexes the corpus
CHECKED = 1_000


def rust_analyzer(tokenizer: Any, texts: Sequence[str]) -> Any | None:
    """The tokenizer's tantivy analyzer (`Tokenizer.tantivy_analyzer`) if it gives the tokenizer's own tokens on the
    first `CHECKED` ASCII texts of `texts`; else None (the texts are then tokenised in Python, as given tokens).

    Analysing in Rust lets tantivy tokenise the corpus in its indexing thread rather than bm25s's regex and
    stemmer one text at a time in Python (26 of the 32 s of the index at 100x). Both apply the same pattern, stop
    words and Snowball stemmer; the check guards against the two stemmers' versions differing on the user's
    words."""
    make = getattr(tokenizer, "tantivy_analyzer", None)
    analyzer = make() if make else None
    if analyzer is None:
        return None
    sample = [t for t in texts[: 4 * CHECKED] if t.isascii()][:CHECKED]
    for text, tokens in zip(sample, tokenizer(sample), strict=True):
        rust = analyzer.analyze(text)
        if rust != [t for t in tokens if t]:
            log.warning(
                "tantivy's analyzer splits %r as %s where bm25s gives %s: the corpus is tokenised in Python",
                text[:80],
                rust[:10],
                list(tokens)[:10],
            )
            return None
    return analyzer


class TantivyIndex:
    """A tantivy index over texts, searched with bm25s's tokens; the same `search` as `BM25Index`."""

    def __init__(self, path: Path, tokenizer: Any, n_docs: int):
        import tantivy

        self.path, self.tokenizer, self.n_docs = path, tokenizer, n_docs
        self.index = tantivy.Index.open(str(path))
        self.schema = self.index.schema
        self.searcher = self.index.searcher()

    @classmethod
    def open(cls, path: Path, texts: Sequence[str], tokenizer: Any, identity: dict[str, Any]) -> TantivyIndex:
        """The index of `texts` at `path`, built there unless a build of the same `identity` (the texts' and the
        tokenisation's fingerprint) is already in place."""
        marker = path / MARKER
        if not (marker.is_file() and json.loads(marker.read_text()) == json.loads(json.dumps(identity))):
            cls.build(path, texts, tokenizer)
            marker.write_text(json.dumps(identity, sort_keys=True))
        return cls(path, tokenizer, len(texts))

    @staticmethod
    def build(path: Path, texts: Sequence[str], tokenizer: Any, threads: int | None = None) -> None:
        """Index `texts` into a fresh folder `path` (a previous build there is replaced) with `threads` indexing
        threads (default: one per CPU where the Rust analyzer tokenises, else one)."""
        import tantivy

        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        analyzer = rust_analyzer(tokenizer, texts)
        sb = tantivy.SchemaBuilder()
        sb.add_text_field("body", tokenizer_name=ANALYZER if analyzer else "whitespace", index_option="freq")
        sb.add_integer_field("pos", fast=True)
        index = tantivy.Index(sb.build(), path=str(path))
        if analyzer:
            index.register_tokenizer(ANALYZER, analyzer)
        # tokens made here are given to the index as they are
        given = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.whitespace()).build()
        # Indexing threads analyse in parallel (into segments whose order is not the documents'; `search` breaks
        # ties by position, so the candidates do not depend on it).
        threads = threads or ((os.cpu_count() or 1) if analyzer else 1)
        writer = index.writer(heap_size=max(15_000_000 * threads, 256_000_000), num_threads=threads)
        pos = 0
        for chunk in _chunks(texts, CHUNK):
            chunk = list(chunk)
            rust = [analyzer is not None and t.isascii() for t in chunk]
            here = iter(
                tokenizer([t for t, r in zip(chunk, rust, strict=True) if not r]) if not all(rust) else ()
            )
            for text, r in zip(chunk, rust, strict=True):
                doc = tantivy.Document(pos=pos)
                if r:
                    doc.add_text("body", text)
                else:
                    doc.add_pre_tokenized_text("body", given.pre_tokenize(" ".join(next(here))))
                writer.add_document(doc)
                pos += 1
        writer.commit()
        writer.wait_merging_threads()

    def bytes_per_doc(self) -> float:
        """The index's size on disk per document: the one structure that grows with the corpus."""
        size = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        return size / max(1, self.n_docs)

    def search(self, queries: Sequence[str], k: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(doc positions, scores) per query, best first (ties by position), non-matching documents left out."""
        import tantivy

        if k < 1:
            raise ConfigError(f"retrieval.k={k} must be at least 1")
        k = min(k, self.n_docs)
        out_ids: list[np.ndarray] = []
        out_scores: list[np.ndarray] = []
        for chunk in _chunks(queries, CHUNK):
            for tokens in self.tokenizer(chunk):
                if not tokens:
                    out_ids.append(np.empty(0, np.int64))
                    out_scores.append(np.empty(0, np.float32))
                    continue
                query = tantivy.Query.boolean_query(
                    [(tantivy.Occur.Should, tantivy.Query.term_query(self.schema, "body", t)) for t in tokens]
                )
                hits = self._hits(query, k)
                pos = np.asarray(self.searcher.fast_field_values("pos", [a for _, a in hits]), np.int64)
                scores = np.asarray([s for s, _ in hits], np.float32) / (K1 + 1)
                order = np.lexsort((pos, -scores))[:k]
                out_ids.append(pos[order])
                out_scores.append(scores[order])
        return out_ids, out_scores

    def _hits(self, query: Any, k: int) -> list[tuple[float, Any]]:
        """Every document scoring at least the k-th best score (or all matches, if fewer): more than k where
        documents tie at the k-th score, so that the caller's ties broken by position do not depend on the order of
        the index's segments, which tantivy breaks ties by.

        Asks for a quarter more than k (on the 100x sample world a third of the queries tie at the 100th score,
        but 1 in 5,000 with more than 25 documents; a quarter more costs about 4% more time); while the last
        hit ties with the k-th, asks for twice as many. tantivy keeps its best `limit` documents, so every document
        above the last hit's score is among the hits."""
        limit = k + 1 + k // 4
        while True:
            hits = self.searcher.search(query, limit=limit, count=False).hits
            if len(hits) < limit or hits[k - 1][0] > hits[-1][0] or limit >= self.n_docs:
                return hits
            limit = min(2 * limit, self.n_docs)


__all__ = ["TantivyIndex", "K1", "B"]
