"""BM25 features: `bm25` and `bm25_rank` (the candidates' own), `bm25_title` and `bm25_text` (BM25 of the pair
over that field alone, with the retrieval's tokenisation; dropped when no document's field holds a term)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from distill.features.family import FeatureContext, FeatureFamily, query_positions
from distill.ir.bm25 import BM25Index

log = logging.getLogger(__name__)


class BM25Features(FeatureFamily):
    names = ("bm25", "bm25_rank", "bm25_title", "bm25_text")
    reads_texts = False
    about = {
        "bm25": "the candidate's BM25 score from retrieval (retrieval.k1, retrieval.b, its tokenisation)",
        "bm25_rank": "the candidate's rank in the BM25 run (1 = first)",
        "bm25_title": "BM25 of the query over the document's title field alone",
        "bm25_text": "BM25 of the query over the document's text field alone",
    }

    reads_corpus_tokens = True

    def prepare(self, ctx: FeatureContext, wanted: set[str]) -> None:
        """One index per field asked for (the corpus's size: the one structure that grows with it)."""
        self.fields: dict[str, BM25Index] = {}
        for field in ("title", "text"):
            if f"bm25_{field}" not in wanted:
                continue
            if not ctx.ds.has_field(field):
                log.info("feature bm25_%s dropped: the corpus has no %r field", field, field)
                continue
            tokens = ctx.corpus_tokens(field)  # read from corpus.jsonl where the dataset holds no texts
            if not len(tokens.flat):
                log.info("feature bm25_%s dropped: no document's %r field holds a term", field, field)
                continue
            self.fields[field] = BM25Index(
                ctx.ds.lazy_doc_texts([field]),
                tokens=tokens,
                pairs_only=True,
                **bm25_options(ctx.rc),
            )

    def index_bytes(self) -> int:
        return sum(idx.nbytes() for idx in getattr(self, "fields", {}).values())

    def compute(self, ctx: FeatureContext, rows: pd.DataFrame, wanted: set[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if "bm25" in wanted:
            out["bm25"] = rows.bm25.to_numpy(np.float32)
        if "bm25_rank" in wanted:
            out["bm25_rank"] = rows["rank"].to_numpy(np.float32)
        if self.fields:
            distinct, q_idx = query_positions(rows)
            d_idx = rows.dpos.to_numpy()
            qtexts = ctx.ds.queries["text"].iloc[distinct].tolist()
            for field, idx in self.fields.items():
                out[f"bm25_{field}"] = idx.score_pairs(qtexts, q_idx, d_idx)
        return out


def bm25_options(rc: Any) -> dict[str, Any]:
    """The retrieval config's BM25 parameters and tokenisation, as BM25Index takes them."""
    return dict(
        k1=rc.k1, b=rc.b, method=rc.method, stemmer=rc.stemmer, stopwords=rc.stopwords, lowercase=rc.lowercase
    )
