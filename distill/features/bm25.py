"""BM25 features: `bm25` and `bm25_rank` (the candidates' own), `bm25_title` and `bm25_text` (BM25 of the pair
over that field alone, with the retrieval's tokenisation; dropped when the corpus lacks the field)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from distill.features.family import FeatureContext, FeatureFamily
from distill.ir.bm25 import BM25Index

log = logging.getLogger(__name__)


class BM25Features(FeatureFamily):
    names = ("bm25", "bm25_rank", "bm25_title", "bm25_text")

    def compute(self, ctx: FeatureContext, wanted: set[str]) -> dict[str, np.ndarray]:
        c, ds, rc = ctx.cands, ctx.ds, ctx.rc
        out: dict[str, np.ndarray] = {}
        if "bm25" in wanted:
            out["bm25"] = c.bm25.to_numpy(np.float32)
        if "bm25_rank" in wanted:
            out["bm25_rank"] = c["rank"].to_numpy(np.float32)
        fields = [f for f in ("title", "text") if f"bm25_{f}" in wanted]
        if not fields:
            return out
        docids = ds.corpus.index
        qids = pd.Index(c.qid.unique())
        q_idx, d_idx = qids.get_indexer(c.qid), docids.get_indexer(c.docid)
        qtexts = ds.queries.loc[qids, "text"].tolist()
        for field in fields:
            col = ds.corpus.get(field)
            if col is None or not col.fillna("").str.strip().astype(bool).any():
                log.info("feature bm25_%s dropped: the corpus has no %r field", field, field)
                continue
            idx = BM25Index(ds.doc_texts(docids, [field]), **bm25_options(rc))
            out[f"bm25_{field}"] = idx.score_pairs(qtexts, q_idx, d_idx)
        return out


def bm25_options(rc) -> dict:
    """The retrieval config's BM25 parameters and tokenisation, as BM25Index takes them."""
    return dict(
        k1=rc.k1, b=rc.b, method=rc.method, stemmer=rc.stemmer, stopwords=rc.stopwords, lowercase=rc.lowercase
    )
