"""Translation features: `click_translation` and `judged_translation`, how strongly a document holds the words
that a query's words stand for, learned from other queries.

A query may name a concept by a word no relevant document holds (an alias, a colloquial name): BM25 cannot see the
match, and neither can any feature computed from the pair's own texts. What can is a statistical translation
table (Berger and Lafferty, 1999) learned from queries whose relevant documents are known: a word w stands for
term t when the documents marked for the queries holding w hold t far more often than documents at large. Here,
for each source query, the share of its marked documents that hold t, averaged over the source queries holding
w, minus the share of the whole corpus that holds t; w keeps at most `most` terms, each scoring at least
`threshold` and `close` times its best, and only if at least `min_queries` source queries hold it. A pair's
feature is the sum, over the query's words and the terms the document holds, of the table's scores.

The marked documents come from two sources, one feature each:
- `click_translation`: the documents clicked for the query in the click log, from the log rows the behaviour
  family uses (before the cut-off, `features.options.click_cutoff`; without timestamps, those of train queries);
- `judged_translation`: the documents the train split's qrels grade above 0.

A source query's own rows would see the table its own marked documents made (in training, the feature would
predict its label): a source query's rows are scored with the table of the other `folds` - 1 folds of source
queries (the folds by a hash of the qid), every other query's rows with the table of them all (out-of-fold, as in
target encoding). By default only the words no document holds are translated (`words: query_only`); `all`
translates every query word, never to itself.

The teacher starts its aliases' embeddings from the same statistic (`distill.teacher.train.translation_init`),
over its training lists (positive against the list's negatives); this family's sources are every marked document
of every source query, against the corpus, so it is built from sparse matrices, a block of words at a time.
Written by hand: no library builds translation features for learning to rank."""

from __future__ import annotations

import logging
import zlib

import numpy as np
import pandas as pd
import scipy.sparse as sp

from distill.errors import ConfigError
from distill.features.behaviour import click_table
from distill.features.family import FeatureContext, FeatureFamily, query_positions
from distill.ir.bm25 import Tokenizer, count_matrix, pair_dots

log = logging.getLogger(__name__)

WORDS = ("query_only", "all")
# the most (source query, word, term) shares added up at a time, counted before a query's marked documents' terms
# are merged (so an upper bound): a block's work arrays hold about this many float64 values, whatever the corpus
BLOCK_SHARES = 2_000_000


class TranslationFeatures(FeatureFamily):
    names = ("click_translation", "judged_translation")
    reads_texts = False
    reads_doc_terms = True  # the corpus's tokens only through them
    about = {
        "click_translation": "summed scores of the terms the document holds in a translation table of the query's "
        "words, learned from the documents clicked for other queries (out-of-fold for a logged query)",
        "judged_translation": "summed scores of the terms the document holds in a translation table of the query's "
        "words, learned from the train qrels of other queries (out-of-fold for a judged train query)",
    }

    def __init__(
        self,
        threshold: float = 0.2,
        close: float = 0.0,
        most: int = 3,
        min_queries: int = 2,
        folds: int = 5,
        words: str = "query_only",
    ) -> None:
        key = "features.families.translation"
        if not 0 < threshold <= 1:
            raise ConfigError(f"{key}.threshold={threshold!r}: give a share in (0, 1]")
        if not 0 <= close <= 1:
            raise ConfigError(f"{key}.close={close!r}: give a fraction of the best score in [0, 1]")
        for name, value, low in (("most", most, 1), ("min_queries", min_queries, 1), ("folds", folds, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{key}.{name}={value!r}: give a whole number >= {low}")
        if words not in WORDS:
            raise ConfigError(f"{key}.words={words!r}: choose one of {list(WORDS)}")
        self.threshold, self.close, self.most = threshold, close, most
        self.min_queries, self.folds, self.words = min_queries, folds, words

    def prepare(self, ctx: FeatureContext, wanted: set[str]) -> None:
        """The query words to translate, and per feature asked for its tables (one per fold, and one of every
        source query) and which fold each query's rows use (-1: the table of every source query)."""
        terms = ctx.doc_terms()
        self.held, self.doc_freq = terms.held, terms.doc_freq
        rc = ctx.rc
        tokens = Tokenizer(rc.stemmer, rc.stopwords, rc.lowercase)(ctx.ds.queries["text"].tolist())
        # word ids in order of first appearance: a set's order of strings changes with each process's hash seed,
        # and with it the order the tables' scores are added in (the features' last bits)
        ids: dict[str, int] = {}
        rows = [
            [
                ids.setdefault(t, len(ids))
                for t in dict.fromkeys(toks)
                if self.words == "all" or t not in terms.vocab
            ]
            for toks in tokens
        ]
        self.query_words = count_matrix(rows, len(ids), binary=True)
        # a word the corpus holds is never translated to itself (words: all)
        self.itself = np.array([terms.vocab.get(w, -1) for w in ids], dtype=np.int64)
        fold = np.array([zlib.crc32(str(q).encode()) % self.folds for q in ctx.ds.queries.index], np.int64)
        self.tables: dict[str, tuple[list[sp.csr_matrix], np.ndarray]] = {}
        sources = {}
        if "click_translation" in wanted:
            sources["click_translation"] = self._clicked(ctx)
        if "judged_translation" in wanted:
            sources["judged_translation"] = self._judged(ctx)
        for name, marked in sources.items():
            if marked is None:
                continue
            source = np.diff(marked.indptr) > 0
            tables = self._tables(marked, source, fold)
            self.tables[name] = (tables, np.where(source, fold, -1))
            log.info(
                "%s: %d source queries; %d of %d query words translated",
                name,
                int(source.sum()),
                int(np.diff(tables[self.folds].indptr).astype(bool).sum()),
                len(ids),
            )

    def _clicked(self, ctx: FeatureContext) -> sp.csr_matrix | None:
        """Queries x documents, 1 where the used click log clicked the document for the query."""
        table = click_table(ctx)
        if table is None:
            log.info("feature click_translation dropped: the dataset has no click log")
            return None
        keys = table.keys[table.click > 0]
        n_docs = len(ctx.ds.corpus)
        return self._marks(len(ctx.ds.queries), n_docs, keys // n_docs, keys % n_docs)

    def _judged(self, ctx: FeatureContext) -> sp.csr_matrix | None:
        """Queries x documents, 1 where the train qrels grade the document above 0 for the query."""
        qrels = ctx.ds.qrels.get("train")
        if qrels is None or not (qrels.relevance > 0).any():
            log.info("feature judged_translation dropped: the dataset has no positive train qrels")
            return None
        rel = qrels[qrels.relevance > 0]
        q = ctx.ds.query_positions(pd.Index(rel.qid).astype(str))
        d = ctx.ds.doc_positions(pd.Index(rel.docid).astype(str))
        known = (q >= 0) & (d >= 0)  # a judgement of a document the corpus lacks marks nothing
        return self._marks(len(ctx.ds.queries), len(ctx.ds.corpus), q[known], d[known])

    @staticmethod
    def _marks(n_queries: int, n_docs: int, q: np.ndarray, d: np.ndarray) -> sp.csr_matrix:
        m = sp.csr_matrix((np.ones(len(q), np.float32), (q, d)), shape=(n_queries, n_docs))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    def _tables(self, marked: sp.csr_matrix, source: np.ndarray, fold: np.ndarray) -> list[sp.csr_matrix]:
        """Words x terms: the table of each fold's complement, then of every source query. Words are taken a
        block at a time, and a block's (word, source query) incidences a piece at a time: each piece's shares of
        marked documents holding each term are summed into the block's words per fold. Blocks and pieces are cut
        by their shares' count (`BLOCK_SHARES`, bounded above by the marked documents' terms), so memory holds one
        piece's shares, one block's sums and the tables, never the queries x terms shares, however many queries
        hold a word or documents are marked for a query."""
        n_words, n_terms = self.query_words.shape[1], self.held.shape[1]
        # each term's share of the corpus (from the counts the term sets were built with: a sum over the matrix
        # would first copy it as int64, 8 bytes per entry of the whole corpus)
        background = self.doc_freq / max(self.held.shape[0], 1)
        by_word = self.query_words[source].T.tocsr()  # words x source queries
        query_of = np.flatnonzero(source)
        # each source query's share of its marked documents that hold each term comes from this
        per_doc = (sp.diags(1.0 / np.maximum(np.diff(marked.indptr), 1)) @ marked).tocsr()
        # per incidence (in by_word's order), the terms of its query's marked documents: the running total, at
        # each incidence and at each word's first
        cost = np.asarray(marked @ np.diff(self.held.indptr).astype(np.float64)).ravel()[query_of]
        total_cost = np.r_[0.0, np.cumsum(np.maximum(cost, 1.0)[by_word.indices])]
        word_cost = total_cost[by_word.indptr]
        parts: list[list[sp.csr_matrix]] = [[] for _ in range(self.folds + 1)]
        start = 0
        while start < n_words:
            # words while their shares fit the block (at least one word)
            end = int(np.searchsorted(word_cost, word_cost[start] + BLOCK_SHARES, side="right")) - 1
            end = min(max(end, start + 1), n_words)
            sums = [sp.csr_matrix((end - start, n_terms)) for _ in range(self.folds)]
            counts = [np.zeros(end - start) for _ in range(self.folds)]
            at, last = by_word.indptr[start], by_word.indptr[end]
            while at < last:
                # incidences while their shares fit the piece (at least one)
                stop = int(np.searchsorted(total_cost, total_cost[at] + BLOCK_SHARES, side="right")) - 1
                stop = min(max(stop, at + 1), last)
                row = np.searchsorted(by_word.indptr, np.arange(at, stop), side="right") - 1 - start
                queries = query_of[by_word.indices[at:stop]]
                # one row per (word, query) incidence, from the term sets of the piece's marked documents only
                # (the corpus's are int8, and a product would convert them all)
                sub = per_doc[queries]
                docs = np.unique(sub.indices)
                shares = (sub[:, docs] @ self.held[docs].astype(np.float64)).tocsr()
                for f in range(self.folds):
                    mine = sp.csr_matrix(
                        ((fold[queries] == f).astype(np.float64), (row, np.arange(len(queries)))),
                        shape=(end - start, len(queries)),
                    )
                    sums[f] = sums[f] + mine @ shares
                    counts[f] += np.asarray(mine.sum(axis=1)).ravel()
                at = stop
            total, total_count = sum(sums[1:], sums[0]), np.sum(counts, axis=0)
            for f in range(self.folds):
                parts[f].append(self._finish(total - sums[f], total_count - counts[f], background, start))
            parts[self.folds].append(self._finish(total, total_count, background, start))
            start = end
        return [
            sp.vstack(p, format="csr") if p else sp.csr_matrix((n_words, n_terms), dtype=np.float32)
            for p in parts
        ]

    def _finish(
        self, sums: sp.csr_matrix, count: np.ndarray, background: np.ndarray, first: int
    ) -> sp.csr_matrix:
        """A block's table rows from its summed shares and source-query counts: the scores kept, the rest 0."""
        sums = sums.tocoo()
        row, col = sums.row, sums.col
        score = sums.data / np.maximum(count[row], 1) - background[col]
        ok = (score >= self.threshold) & (count[row] >= self.min_queries) & (col != self.itself[first + row])
        row, col, score = row[ok], col[ok], score[ok]
        # per word, best first; scores equal to 9 decimals are ties (sums of the same shares in another order
        # differ in the last bits), and the lower term id goes first
        order = np.lexsort((col, -np.round(score, 9), row))
        row, col, score = row[order], col[order], score[order]
        first_of_row = np.r_[0, np.flatnonzero(np.diff(row)) + 1]
        starts = np.repeat(first_of_row, np.diff(np.r_[first_of_row, len(row)]))
        rank, best = np.arange(len(row)) - starts, score[starts]
        keep = (rank < self.most) & (score >= self.close * best)
        return sp.csr_matrix((score[keep].astype(np.float32), (row[keep], col[keep])), shape=sums.shape)

    def compute(self, ctx: FeatureContext, rows: pd.DataFrame, wanted: set[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        distinct, q_idx = query_positions(rows)
        d_idx = rows.dpos.to_numpy()
        words = self.query_words[distinct]
        for name, (tables, fold) in self.tables.items():
            if name not in wanted:
                continue
            value = np.zeros(len(rows), np.float32)
            use = fold[distinct][q_idx]  # each row's table: its query's fold, or -1 (every source query)
            for f in np.unique(use):
                at = np.flatnonzero(use == f)
                table = tables[int(f)] if f >= 0 else tables[self.folds]
                # the chunk's queries x the terms their words stand for
                expanded = (words @ table).tocsr()
                value[at] = pair_dots(expanded, self.held, q_idx[at], d_idx[at])
            out[name] = value
        return out
