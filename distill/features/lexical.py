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

    def prepare(self, ctx: FeatureContext, wanted: set[str]) -> None:
        """Every document's term set and length (the corpus's size), in the retrieval's tokenisation, from each
        of `retrieval.fields`' tokens (`ctx.corpus_tokens`, shared with the BM25 family): a document's text is its
        fields joined by a space, and a space splits words, so its terms are its fields' terms together. Memory
        holds the term sets, not every document's tokens."""
        rc = ctx.rc
        self.tokenizer = Tokenizer(rc.stemmer, rc.stopwords, rc.lowercase)
        # the fields the corpus has (none of them: tokenising names the missing fields in a DataError)
        fields = [f for f in rc.fields if f in ctx.ds.corpus] or list(rc.fields)
        self.vocab: dict[str, int] = {}
        lengths = np.zeros(len(ctx.ds.corpus), dtype=np.int64)
        docs: sp.csr_matrix | None = None
        for name in fields:
            part = ctx.corpus_tokens(name)
            lengths += np.diff(part.offsets)
            if "coverage" not in wanted:
                continue
            # the field's term ids in the vocabulary of every field; its tokens as a documents x terms matrix
            # whose repeated entries add up (the token arrays are its indices: nothing else is built)
            remap = np.fromiter(
                (self.vocab.setdefault(t, len(self.vocab)) for t in part.vocab), np.int32, len(part.vocab)
            )
            field_docs = sp.csr_matrix(
                (np.ones(len(part.flat), dtype=np.float32), remap[part.flat], part.offsets),
                shape=(len(ctx.ds.corpus), len(self.vocab)),
            )
            field_docs.sum_duplicates()
            if docs is not None:
                docs.resize(field_docs.shape)
                field_docs = docs + field_docs
            docs = field_docs
        self.doc_len = lengths.astype(np.float32)
        self.docs = None
        if docs is not None:
            # whether the document holds the term, one byte per entry: the matrix is the family's state for the
            # whole corpus, and float32 counts would take four
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
