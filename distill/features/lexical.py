"""Lexical features: `query_len` (distinct query terms), `doc_len` (document terms) and `coverage` (the share of
the query's terms the document holds), all after the retrieval's tokenisation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from distill.features.bm25 import bm25_options
from distill.features.family import FeatureContext, FeatureFamily
from distill.ir.bm25 import BM25Index, pair_dots


class LexicalFeatures(FeatureFamily):
    names = ("query_len", "doc_len", "coverage")

    def compute(self, ctx: FeatureContext, wanted: set[str]) -> dict[str, np.ndarray]:
        c, ds, rc = ctx.cands, ctx.ds, ctx.rc
        docids = ds.corpus.index
        qids = pd.Index(c.qid.unique())
        q_idx, d_idx = qids.get_indexer(c.qid), docids.get_indexer(c.docid)
        doc_texts = ds.doc_texts(docids, rc.fields)
        index = BM25Index(doc_texts, **bm25_options(rc))  # its tokeniser: the retrieval's own
        q_tokens = index.tokenize(ds.queries.loc[qids, "text"].tolist(), ids=False)
        doc_tokens = index.tokenize(doc_texts, ids=False)
        qlen = np.array([len(set(t)) for t in q_tokens], dtype=np.float32)
        out = {
            "query_len": qlen[q_idx].astype(np.float32),
            "doc_len": np.array([len(t) for t in doc_tokens], dtype=np.float32)[d_idx],
        }
        if "coverage" in wanted:
            Q, D = index.term_matrix(q_tokens, binary=True), index.term_matrix(doc_tokens, binary=True)
            del doc_tokens
            out["coverage"] = (pair_dots(Q, D, q_idx, d_idx) / np.maximum(qlen[q_idx], 1)).astype(np.float32)
        return {k: v for k, v in out.items() if k in wanted}
