"""BM25 candidates through tantivy (Rust; block-max WAND: a query's top k without scoring every matching
document), with exactly the tokenisation of the project's bm25s index.

Texts are tokenised by bm25s's own tokenizer with the configured lower-casing, stop words and stemmer (in chunks,
so the corpus is never held as tokens at once) and indexed as whitespace-separated tokens, so both engines see the
same terms. tantivy scores with Lucene's BM25 at k1 = 1.2, b = 0.75 (tantivy-py does not expose them; the
retrieval schema refuses other values for this engine) and multiplies by (k1 + 1), which bm25s's `lucene` method
leaves out: scores here are divided by (k1 + 1), so the `bm25` column means the same under either engine (up to
tantivy's one-byte document-length norms). Written by hand because no library offers this bridge: it is the glue
between bm25s's tokens and tantivy's index.

The index lives in a folder (`path`); `TantivyIndex.open` reuses one built before from the same texts and options
(a marker file records their fingerprint), so candidates, serving and Dask workers share one build.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import ConfigError

K1, B = 1.2, 0.75  # tantivy's BM25 parameters
CHUNK = 20_000  # texts tokenised and indexed per step
MARKER = ".distill-index.json"


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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
    def build(path: Path, texts: Sequence[str], tokenizer: Any, threads: int = 1) -> None:
        """Index `texts` into a fresh folder `path` (a previous build there is replaced)."""
        import tantivy

        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        sb = tantivy.SchemaBuilder()
        sb.add_text_field("body", tokenizer_name="whitespace", index_option="freq")
        sb.add_integer_field("pos", fast=True)
        index = tantivy.Index(sb.build(), path=str(path))
        writer = index.writer(heap_size=max(15_000_000 * threads, 256_000_000), num_threads=threads)
        pos = 0
        for chunk in _chunks(texts, CHUNK):
            for tokens in tokenizer(chunk):
                writer.add_document(tantivy.Document(body=" ".join(tokens), pos=pos))
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
                hits = self.searcher.search(query, limit=k, count=False).hits
                pos = np.asarray(self.searcher.fast_field_values("pos", [a for _, a in hits]), np.int64)
                scores = np.asarray([s for s, _ in hits], np.float32) / (K1 + 1)
                order = np.lexsort((pos, -scores))
                out_ids.append(pos[order])
                out_scores.append(scores[order])
        return out_ids, out_scores


__all__ = ["TantivyIndex", "K1", "B"]
