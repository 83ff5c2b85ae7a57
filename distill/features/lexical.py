"""Lexical features: `query_len` (distinct query terms), `doc_len` (document terms) and `coverage` (the share of
the query's terms the document holds), all after the retrieval's tokenisation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from distill.features.family import FeatureContext, FeatureFamily, query_positions
from distill.ir.bm25 import CompactTokens, Tokenizer, count_matrix, pair_dots


class LexicalFeatures(FeatureFamily):
    names = ("query_len", "doc_len", "coverage")
    about = {
        "query_len": "distinct query terms after the retrieval's tokenisation",
        "doc_len": "document terms after the retrieval's tokenisation",
        "coverage": "share of the query's distinct terms the document holds",
    }

    def prepare(self, ctx: FeatureContext, wanted: set[str]) -> None:
        """Every document's term set and length (the corpus's size), in the retrieval's tokenisation, tokenised a
        chunk of documents at a time (`CompactTokens`: memory holds the term sets, not every document's tokens)."""
        rc = ctx.rc
        self.tokenizer = Tokenizer(rc.stemmer, rc.stopwords, rc.lowercase)
        corpus = CompactTokens(ctx.ds.lazy_doc_texts(rc.fields), self.tokenizer)
        self.vocab = corpus.vocab
        lengths = np.diff(corpus.offsets)
        self.doc_len = lengths.astype(np.float32)
        self.docs = None
        if "coverage" in wanted:
            rows = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
            docs = sp.csr_matrix(
                (np.ones(len(rows), dtype=np.float32), (rows, corpus.flat)),
                shape=(len(lengths), len(self.vocab)),
            )
            # whether the document holds the term (its repeats were summed), one byte per entry: the matrix is
            # the family's state for the whole corpus, and float32 ones would take four
            self.docs = sp.csr_matrix(
                (np.ones(docs.nnz, dtype=np.int8), docs.indices, docs.indptr), shape=docs.shape
            )
            del docs

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
