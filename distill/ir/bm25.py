"""BM25 over a corpus with bm25s; tokenisation, stemming and stop words configurable."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import bm25s
import numpy as np

from distill.errors import ConfigError

log = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)


def _stemmer(language: str | None):
    if not language:
        return None
    import Stemmer  # PyStemmer

    try:
        return Stemmer.Stemmer(language).stemWords
    except KeyError as e:
        raise ConfigError(
            f"retrieval.stemmer={language!r} is not a PyStemmer language; "
            f"choose one of {Stemmer.algorithms()} or null"
        ) from e


class BM25Index:
    """A bm25s index over `texts`; `search` returns, per query, the matching doc positions and scores.

    Documents that share no term with a query are never returned, so a query can get fewer than k results.
    """

    def __init__(
        self,
        texts: Sequence[str],
        *,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        stemmer: str | None = "english",
        stopwords: str | None = "en",
        lowercase: bool = True,
    ):
        self.stem = _stemmer(stemmer)
        self.stopwords: str | list[str] = stopwords or []
        self.lowercase = lowercase
        self.n_docs = len(texts)
        self.retriever = bm25s.BM25(k1=k1, b=b, method=method)
        tokens = self.tokenize(texts)
        self.retriever.index(tokens, show_progress=False)

    def tokenize(self, texts: Sequence[str], ids: bool = True):
        """The index's tokens of `texts` (lower-casing, stop words, stemming as configured): token ids, or
        token strings with `ids=False`."""
        return bm25s.tokenize(
            list(texts),
            lower=self.lowercase,
            stopwords=self.stopwords,
            stemmer=self.stem,
            return_ids=ids,
            show_progress=False,
        )

    @staticmethod
    def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best positive scores, best first, ties by document position.

        Written here rather than through `bm25s.retrieve` because its top-k partitions the whole score vector
        per query: O(documents) each, so retrieving for 100x the queries over 100x the documents costs 10,000x.
        Selecting among the matching documents only costs O(matches) after one vectorised scan."""
        hit = np.flatnonzero(scores > 0)
        if len(hit) > k:
            s = scores[hit]
            kth = -np.partition(-s, k - 1)[k - 1]
            above = hit[s > kth]
            hit = np.concatenate([above, hit[s == kth][: k - len(above)]])
        hit = hit[np.lexsort((hit, -scores[hit]))]
        return hit.astype(np.int64), scores[hit].astype(np.float32)

    def score_pairs(
        self, queries: Sequence[str], q_idx: np.ndarray, d_idx: np.ndarray, chunk: int = 500_000
    ) -> np.ndarray:
        """BM25 of each pair (queries[q_idx[i]], document d_idx[i]), as `search` scores it, in O(pairs x terms):
        a query-term count matrix times the index's document-term weights, row by row of the pairs, where a
        score vector per query would cost O(queries x documents)."""
        import scipy.sparse as sp

        sc = self.retriever.scores
        n_terms = len(sc["indptr"]) - 1
        if not hasattr(self, "_doc_terms"):  # documents x terms, the postings turned round
            by_term = sp.csr_matrix((sc["data"], sc["indices"], sc["indptr"]), shape=(n_terms, self.n_docs))
            self._doc_terms = by_term.T.tocsr()
        vocab = self.retriever.vocab_dict
        rows, cols = [], []
        for i, toks in enumerate(self.tokenize(queries, ids=False)):
            ids = [vocab[t] for t in toks if t in vocab]
            rows += [i] * len(ids)
            cols += ids
        counts = sp.csr_matrix(
            (np.ones(len(rows)), (rows, cols)), shape=(len(queries), n_terms)
        )  # sums repeats
        out = np.empty(len(q_idx), dtype=np.float32)
        for a in range(0, len(q_idx), chunk):
            c = slice(a, a + chunk)
            out[c] = np.asarray(counts[q_idx[c]].multiply(self._doc_terms[d_idx[c]]).sum(axis=1)).ravel()
        extra = getattr(self.retriever, "nonoccurrence_array", None)
        if extra is not None:  # bm25l / bm25+: every document gets the query terms' non-occurrence score
            out += np.asarray(counts @ extra, dtype=np.float32)[q_idx]
        return out

    def search(self, queries: Sequence[str], k: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(doc positions, scores) per query, best first, zero-score (non-matching) documents removed."""
        if k < 1:
            raise ConfigError(f"retrieval.k={k} must be at least 1")
        k = min(k, self.n_docs)
        vocab = self.retriever.vocab_dict
        qtokens = [[t for t in q if t in vocab] for q in self.tokenize(queries, ids=False)]
        out_ids: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(queries)
        out_scores: list[np.ndarray] = [np.empty(0, dtype=np.float32)] * len(queries)
        for i, toks in enumerate(qtokens):
            if toks:
                out_ids[i], out_scores[i] = self._top_k(self.retriever.get_scores(toks), k)
        return out_ids, out_scores
