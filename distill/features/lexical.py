"""Lexical features: `query_len` (distinct query terms), `doc_len` (document terms) and `coverage` (the share of
the query's terms the document holds), all after the retrieval's tokenisation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from distill.features.family import FeatureContext, FeatureFamily, query_positions
from distill.ir.bm25 import Tokenizer, count_matrix, pair_dots


class LexicalFeatures(FeatureFamily):
    names = ("query_len", "doc_len", "coverage")
    reads_texts = False
    about = {
        "query_len": "distinct query terms after the retrieval's tokenisation",
        "doc_len": "document terms after the retrieval's tokenisation",
        "coverage": "share of the query's distinct terms the document holds",
    }

    reads_corpus_tokens = True
    reads_doc_terms = True

    def prepare(self, ctx: FeatureContext, wanted: set[str]) -> None:
        """Every document's length and term set (the corpus's size), in the retrieval's tokenisation, from each
        of `retrieval.fields`' tokens (`ctx.corpus_tokens`, shared with the BM25 family; the term sets with the
        translation family, `ctx.doc_terms`)."""
        rc = ctx.rc
        self.tokenizer = Tokenizer(rc.stemmer, rc.stopwords, rc.lowercase)
        lengths = np.zeros(len(ctx.ds.corpus), dtype=np.int64)
        for name in ctx.token_fields():
            lengths += np.diff(ctx.corpus_tokens(name).offsets)
        self.doc_len = lengths.astype(np.float32)
        self.vocab: dict[str, int] = {}
        self.docs: sp.csr_matrix | None = None
        if "coverage" in wanted:
            terms = ctx.doc_terms()
            self.vocab, self.docs = terms.vocab, terms.held

    def compute(self, ctx: FeatureContext, rows: pd.DataFrame, wanted: set[str]) -> dict[str, np.ndarray]:
        distinct, q_idx = query_positions(rows)
        d_idx = rows.dpos.to_numpy()
        q_tokens = self.tokenizer(ctx.ds.queries["text"].iloc[distinct].tolist())
        qlen = np.array([len(set(t)) for t in q_tokens], dtype=np.float32)
        out = {"query_len": qlen[q_idx].astype(np.float32), "doc_len": self.doc_len[d_idx]}
        if self.docs is not None:
            Q = count_matrix(
                [[self.vocab[t] for t in toks if t in self.vocab] for toks in q_tokens], len(self.vocab), True
            )
            out["coverage"] = (pair_dots(Q, self.docs, q_idx, d_idx) / np.maximum(qlen[q_idx], 1)).astype(
                np.float32
            )
        return {k: v for k, v in out.items() if k in wanted}
