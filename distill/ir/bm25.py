"""BM25 over a corpus with bm25s; tokenisation, stemming and stop words configurable."""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import bm25s
import numpy as np
import scipy.sparse as sp

from distill.errors import ConfigError
from distill.ir.pools import forked_pool, ordered_submit

log = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)


# Pruned search (`BM25Index._pruned_top_k`) gives up once scoring its candidates one posting lookup at a time
# would cost more than this many times the exhaustive scoring's work (documents plus postings) per lookup.
PRUNE_COST = 8
# A term's impact list (`BM25Index._impact`) holds its documents above its (IMPACT x k + 1)-th largest weight.
IMPACT = 2

# Processes tokenising a corpus at most (`tokenised_parts`): bounds the texts in flight (two parts each)
MAX_WORKERS = 8

# The texts that processes forked by `tokenised_parts` read their parts from (set before they are forked)
_CORPUS: Sequence[str] | None = None

# Pairs per step of `pair_dots`: bounds the memory of the gathered rows (about 50 MB at 50 terms per text; the
# features stage computes a chunk of `features.chunk_rows` pairs, 200,000 by default, in steps of this many).
PAIR_CHUNK = 50_000


def pair_dots(
    a: sp.csr_matrix, b: sp.csr_matrix, a_idx: np.ndarray, b_idx: np.ndarray, chunk: int = PAIR_CHUNK
) -> np.ndarray:
    """Row a[a_idx[i]] . row b[b_idx[i]] for every pair i, `chunk` pairs at a time."""
    out = np.empty(len(a_idx))
    for start in range(0, len(a_idx), chunk):
        c = slice(start, start + chunk)
        out[c] = np.asarray(a[a_idx[c]].multiply(b[b_idx[c]]).sum(axis=1)).ravel()
    return out


def count_matrix(ids: Sequence[Sequence[int]], n_terms: int, binary: bool = False) -> sp.csr_matrix:
    """Texts x terms from each text's term ids: how often each term occurs, or whether it does (`binary`: 0/1
    in float32, exact, half the bytes)."""
    if binary:
        ids = [list(set(row)) for row in ids]
    rows = np.repeat(np.arange(len(ids), dtype=np.int32), [len(row) for row in ids])
    cols = np.fromiter((t for row in ids for t in row), dtype=np.int32, count=len(rows))
    # repeated (row, term) entries add up: counts
    data = np.ones(len(rows), dtype=np.float32 if binary else np.float64)
    return sp.csr_matrix((data, (rows, cols)), shape=(len(ids), n_terms))


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


# bm25s's token pattern (words of two or more word characters), which `Tokenizer` keeps; on ASCII text it finds
# what ASCII_TOKEN_PATTERN finds (maximal runs of two or more ASCII word characters), which Rust's regex runs
# faster than Unicode word boundaries
TOKEN_PATTERN = r"(?u)\b\w\w+\b"
ASCII_TOKEN_PATTERN = r"[0-9A-Za-z_]{2,}"
# The Snowball stemmers of both PyStemmer and tantivy (rust-stemmers), by PyStemmer's names
TANTIVY_STEMMERS = frozenset(
    [
        "arabic",
        "danish",
        "dutch",
        "english",
        "finnish",
        "french",
        "german",
        "greek",
        "hungarian",
        "italian",
        "norwegian",
        "portuguese",
        "romanian",
        "russian",
        "spanish",
        "swedish",
        "tamil",
        "turkish",
    ]
)


class Tokenizer:
    """The project's BM25 tokenisation (bm25s's tokenizer: lower-casing, stop words, stemming as configured): a
    callable from texts to their token strings. Both engines use it, so they index and search the same terms."""

    def __init__(self, stemmer: str | None = "english", stopwords: str | None = "en", lowercase: bool = True):
        self.language = stemmer
        self.stem = _stemmer(stemmer)
        self.stopwords: str | list[str] = stopwords or []
        self.lowercase = lowercase

    def __getstate__(self) -> dict[str, Any]:  # for tokenising processes: the stemmer is made again there
        return {"language": self.language, "stopwords": self.stopwords, "lowercase": self.lowercase}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["language"], state["stopwords"] or None, state["lowercase"])  # type: ignore[misc]

    def __call__(self, texts: Sequence[str], ids: bool = False) -> Any:
        return bm25s.tokenize(
            list(texts),
            lower=self.lowercase,
            token_pattern=TOKEN_PATTERN,
            stopwords=self.stopwords,
            stemmer=self.stem,
            return_ids=ids,
            show_progress=False,
        )

    def tantivy_analyzer(self) -> Any | None:
        """This tokenisation as a tantivy analyzer (bm25s's token pattern, then lower-casing, the same stop words
        and the same Snowball stemmer, run in Rust by tantivy's indexing threads), or None where tantivy has no
        such stemmer. It splits as bm25s does on ASCII text only: outside ASCII, Python's and Rust's `\\w` differ
        (combining marks, other numbers) and bm25s lower-cases before it splits, so callers give it ASCII texts
        (`str.isascii`) and tokenise the rest here."""
        import tantivy
        from bm25s.tokenization import _infer_stopwords

        if self.language and self.language not in TANTIVY_STEMMERS:
            return None
        builder = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(ASCII_TOKEN_PATTERN))
        if self.lowercase:
            builder = builder.filter(tantivy.Filter.lowercase())
        words = list(_infer_stopwords(self.stopwords))
        if words:
            builder = builder.filter(tantivy.Filter.custom_stopword(words))
        if self.language:
            builder = builder.filter(tantivy.Filter.stemmer(self.language))
        return builder.build()


class GivenTokens:
    """A tokenisation of the caller's (e.g. a model's sub-word tokenizer: texts -> each text's token strings) in
    the `Tokenizer` call form; bm25s indexes and scores lists of token strings as they are."""

    def __init__(self, split: Callable[[Sequence[str]], list[list[str]]]):
        self.split = split

    def __call__(self, texts: Sequence[str], ids: bool = False) -> list[list[str]]:
        return self.split(list(texts))


def tokenise_part(
    tokenize: Callable[..., Any], texts: Sequence[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """One part of a corpus in its own vocabulary: its words in order of first occurrence, every token as an index
    into them, and each text's number of tokens."""
    vocab: dict[str, int] = {}
    ids: list[int] = []
    lengths: list[int] = []
    for toks in tokenize(texts, ids=False):
        ids.extend(vocab.setdefault(t, len(vocab)) for t in toks)
        lengths.append(len(toks))
    return list(vocab), np.asarray(ids, np.int32), np.asarray(lengths, np.int64)


def tokenised_parts(
    tokenize: Callable[..., Any], texts: Sequence[str], chunk: int, workers: int | None = None
) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    """`tokenise_part` of each `chunk` of `texts` in order: on `workers` forked processes (`forked_pool`; default:
    one per CPU, at most `MAX_WORKERS`) where there are several chunks and the tokenisation is the project's own
    (`Tokenizer`, which a process can rebuild), else here.

    bm25s tokenises in Python, one text at a time under the interpreter's lock (most of preparing BM25 over a
    corpus), so threads would not help. Each process reads its chunks of `texts` itself (forked with them: a
    corpus read from its file, `CorpusFile`, is read there), and only the chunks' arrays come back, at most two
    per process in flight: this process never holds a chunk's texts for them."""
    global _CORPUS
    bounds = [(a, min(a + chunk, len(texts))) for a in range(0, len(texts), chunk)]
    workers = min(workers or os.cpu_count() or 1, MAX_WORKERS)
    _CORPUS = texts
    try:
        with forked_pool(workers if len(bounds) > 1 and isinstance(tokenize, Tokenizer) else 1) as pool:
            if pool is None:
                yield from (_tokenise_bounds(tokenize, b) for b in bounds)
            else:
                part = functools.partial(_tokenise_bounds, tokenize)
                yield from ordered_submit(pool, part, bounds, 2 * workers)
    finally:
        _CORPUS = None


def _tokenise_bounds(tokenize: Callable[..., Any], bounds: tuple[int, int]) -> Any:
    """`tokenise_part` of the texts `bounds` of `_CORPUS` (here, or in a forked process)."""
    assert _CORPUS is not None
    return tokenise_part(tokenize, [*_CORPUS[bounds[0] : bounds[1]]])


class CompactTokens(Sequence[list[int]]):
    """A tokenised corpus in the form bm25s's `index` takes (`ids`: each text's token ids, `vocab`: token -> id),
    held as one int32 array of every token id and each text's offset: the texts are tokenised `chunk` at a time,
    so memory holds 4 bytes per token rather than a Python list of Python ints per text (about 40 bytes per token,
    what bm25s's own `tokenize` returns for the whole corpus at once). bm25s reads `ids` as a sequence of lists;
    each is made when read."""

    def __init__(
        self,
        texts: Sequence[str],
        tokenize: Callable[..., Any],
        chunk: int = 50_000,
        workers: int | None = None,
    ):
        self.vocab: dict[str, int] = {}
        flat: list[np.ndarray] = [np.zeros(0, np.int32)]
        lengths: list[np.ndarray] = [np.zeros(0, np.int64)]
        for words, ids, lens in tokenised_parts(tokenize, texts, chunk, workers):
            # each part's own ids in order of first occurrence, renumbered so: the ids one process would give
            remap = np.fromiter(
                (self.vocab.setdefault(w, len(self.vocab)) for w in words), np.int32, len(words)
            )
            flat.append(remap[ids])
            lengths.append(lens)
        self.flat = np.concatenate(flat)
        self.offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths), dtype=np.int64)])

    @property
    def ids(self) -> CompactTokens:
        """Itself (bm25s reads a tokenised corpus's `ids`). A property, not an attribute: `self.ids = self` made each
        a reference cycle, whose arrays (155 MiB at 100x the sample world) only the cyclic collector freed, at a
        time of its choosing, long after the last family that read them was prepared."""
        return self

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.flat[self.offsets[i] : self.offsets[i + 1]].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for a, b in zip(self.offsets[:-1], self.offsets[1:], strict=True):
            yield self.flat[a:b].tolist()


# Documents per step of `ArrayBM25`'s build: bounds the memory of one step's counts and weights.
BUILD_DOCS = 20_000


class ArrayBM25(bm25s.BM25):
    """bm25s's BM25 whose index is built from a `CompactTokens`' arrays: the same postings (BM25 weights, term
    ids, offsets, in bm25s's float32 and dtypes), from bm25s's own idf and term-frequency scorers applied to a
    step of documents at a time.

    Written here because bm25s's `build_index_from_ids` (which it documents as the method to override) counts
    and scores one document at a time in Python, then sorts every posting by a 64-bit key: at 1.8M documents
    that was most of a minute per field and about 36 bytes per posting at its peak. Here the counts are a sparse
    documents x terms matrix made from the token arrays, and the weights fill its entries. Set `term_major` to
    False to keep only the documents x terms weights (`doc_major`: what scoring given pairs reads) and never
    build the term-major postings that search reads."""

    term_major: bool = True
    doc_major: sp.csr_matrix | None = None

    def build_index_from_ids(
        self,
        unique_token_ids: list[int],
        corpus_token_ids: Any,
        show_progress: bool = True,
        leave_progress: bool = False,
    ) -> dict[str, Any]:
        if not isinstance(corpus_token_ids, CompactTokens):
            return super().build_index_from_ids(
                unique_token_ids, corpus_token_ids, show_progress, leave_progress
            )
        from bm25s import scoring

        tokens, n_terms = corpus_token_ids, len(unique_token_ids)
        lengths = np.diff(tokens.offsets)
        n_docs, avg_len = len(lengths), lengths.mean()
        steps = [(a, min(a + BUILD_DOCS, n_docs)) for a in range(0, n_docs, BUILD_DOCS)]
        # a first pass over the steps counts each document's distinct terms and each term's documents, so that the
        # second writes the postings where they go: memory holds them once, never a copy to concatenate or sort
        per_doc = np.zeros(n_docs, np.int64)
        doc_freq = np.zeros(n_terms, np.int64)
        for a, b in steps:
            counts = _term_counts(tokens, a, b, n_terms)
            per_doc[a:b] = np.diff(counts.indptr)
            doc_freq += np.bincount(counts.indices, minlength=n_terms)
        indptr = np.concatenate([[0], np.cumsum(per_doc)]).astype(np.int64)
        freqs = dict(enumerate(doc_freq.tolist()))
        idf_fn, tfc_fn = scoring._select_idf_scorer(self.idf_method), scoring._select_tfc_scorer(self.method)
        self.nonoccurrence_array = None
        if self.method in self.methods_requiring_nonoccurrence:
            self.nonoccurrence_array = scoring._build_nonoccurrence_array(
                doc_frequencies=freqs,
                n_docs=n_docs,
                compute_idf_fn=idf_fn,
                calculate_tfc_fn=tfc_fn,
                l_d=avg_len,
                l_avg=avg_len,
                k1=self.k1,
                b=self.b,
                delta=self.delta,
                dtype=self.dtype,
            )
        idf = scoring._build_idf_array(
            doc_frequencies=freqs, n_docs=n_docs, compute_idf_fn=idf_fn, dtype=self.dtype
        )
        # the term-major offsets (each term's document frequency), and where each term's next posting goes
        by_term = np.concatenate([[0], np.cumsum(doc_freq)]).astype(np.int64)
        cursor = by_term[:-1].copy()
        data, indices = np.empty(int(indptr[-1]), self.dtype), np.empty(int(indptr[-1]), np.int32)
        for a, b in steps:  # the weights of the counts, in bm25s's arithmetic (its float32, then its dtype)
            counts = _term_counts(tokens, a, b, n_terms)
            t = counts.indices.astype(np.int32)
            doc_len = np.repeat(lengths[a:b].astype(np.float64), per_doc[a:b])
            w = idf[t] * tfc_fn(
                tf_array=counts.data, l_d=doc_len, l_avg=avg_len, k1=self.k1, b=self.b, delta=self.delta
            )
            if self.nonoccurrence_array is not None:
                w -= self.nonoccurrence_array[t]
            w = w.astype(np.float32).astype(self.dtype, copy=False)
            if not self.term_major:
                data[indptr[a] : indptr[b]], indices[indptr[a] : indptr[b]] = w, t
                continue
            # term-major: each term's postings in document order (a stable sort of the step by term), after the
            # earlier steps' postings of the term
            order = np.argsort(t, kind="stable")
            t = t[order]
            at = cursor[t] + np.arange(len(t)) - np.searchsorted(t, t)
            data[at] = w[order]
            indices[at] = np.repeat(np.arange(a, b, dtype=np.int32), per_doc[a:b])[order]
            cursor += np.bincount(t, minlength=n_terms)
        if not self.term_major:
            self.doc_major = sp.csr_matrix((data, indices, indptr), shape=(n_docs, n_terms))
            # the term-major offsets alone, as a searchable index has them
            return {"indptr": by_term, "num_docs": n_docs}
        return {"data": data, "indices": indices, "indptr": by_term, "num_docs": n_docs}


def _term_counts(tokens: CompactTokens, a: int, b: int, n_terms: int) -> sp.csr_matrix:
    """Documents a..b of `tokens` as a documents x terms matrix of float32 counts, each row's terms sorted."""
    lo, hi = tokens.offsets[a], tokens.offsets[b]
    counts = sp.csr_matrix(
        (np.ones(hi - lo, np.float32), tokens.flat[lo:hi].copy(), tokens.offsets[a : b + 1] - lo),
        shape=(b - a, n_terms),
    )
    counts.sum_duplicates()
    return counts


class BM25Index:
    """A bm25s index over `texts`; `search` returns, per query, the matching doc positions and scores.

    Documents that share no term with a query are never returned, so a query can get fewer than k results.
    `tokenizer` (texts -> token strings) replaces the project's word tokenisation (stemmer, stopwords and
    lowercase are then unused).
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
        tokenizer: Callable[[Sequence[str]], list[list[str]]] | None = None,
        tokens: CompactTokens | None = None,
        pairs_only: bool = False,
        after_tokens: Callable[[], None] | None = None,
    ):
        self.tokenizer: Tokenizer | GivenTokens = (
            GivenTokens(tokenizer) if tokenizer else Tokenizer(stemmer, stopwords, lowercase)
        )
        self.n_docs = len(texts)
        if tokens is None:
            # the tokenizer itself, not a method around it: `tokenised_parts` tokenises on processes only
            # what it knows to be the project's `Tokenizer`
            tokens = CompactTokens(texts, self.tokenizer)
        elif len(tokens) != self.n_docs:
            raise ValueError(f"tokens of {len(tokens)} texts given for an index of {self.n_docs}")
        if after_tokens is not None:  # the caller lets its texts go before the index's own memory is taken
            after_tokens()
        self.retriever = ArrayBM25(k1=k1, b=b, method=method)
        # `pairs_only`: only `score_pairs` will be asked, so no term-major postings are built (a stage that scores
        # given pairs holds one copy of the index, not two)
        self.retriever.term_major = not pairs_only
        # `tokens`: the texts tokenised before with this tokenisation (a caller that shares them with another use)
        self.retriever.index(tokens, show_progress=False)
        if self.retriever.doc_major is not None:
            self.__dict__["_doc_terms"], self.retriever.doc_major = self.retriever.doc_major, None

    def tokenize(self, texts: Sequence[str], ids: bool = True):
        """The index's tokens of `texts` (lower-casing, stop words, stemming as configured): token ids, or
        token strings with `ids=False`."""
        return self.tokenizer(texts, ids=ids)

    def nbytes(self) -> int:
        """The index's postings (BM25 weights, term ids, offsets) as held: term-major for `search`, document-major
        for `score_pairs` (`pairs_only`: that one alone): what grows with the corpus."""
        sc = self.retriever.scores
        doc_major = self.__dict__.get("_doc_terms")
        parts = [sc[k] for k in ("data", "indices", "indptr") if k in sc]
        if doc_major is not None:
            parts += [doc_major.data, doc_major.indices, doc_major.indptr]
        return sum(np.asarray(p).nbytes for p in parts)

    def bytes_per_doc(self) -> float:
        """`nbytes` per document."""
        return self.nbytes() / max(1, self.n_docs)

    @staticmethod
    def _top_k(
        scores: np.ndarray, k: int, positions: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best positive scores, best first, ties by document position. `scores` is one per document, or
        one per entry of `positions` (sorted document positions: a query's candidates).

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
        docs = hit if positions is None else positions[hit]
        return docs.astype(np.int64), scores[hit].astype(np.float32)

    @functools.cached_property
    def _term_bounds(self) -> np.ndarray | None:
        """Each term's largest weight, or None where `_pruned_top_k` could not be exact: a method that scores
        documents without the query's terms (bm25l, bm25+), or postings not sorted by document."""
        if getattr(self.retriever, "nonoccurrence_array", None) is not None:
            return None
        sc = self.retriever.scores
        data, ind, ptr = sc["data"], sc["indices"], np.asarray(sc["indptr"], dtype=np.int64)
        # compared where they are: a difference in int64 held two int64 copies of the postings' document ids
        rising = ind[1:] > ind[:-1]
        inner = ptr[1:-1]
        rising[inner[(inner > 0) & (inner < len(ind))] - 1] = True  # a new term starts: any order across
        if not rising.all() or (len(data) and data.min() <= 0):
            return None
        bounds = np.zeros(len(ptr) - 1)
        held = ptr[1:] > ptr[:-1]  # terms with postings
        if held.any():
            bounds[held] = np.maximum.reduceat(data, ptr[:-1][held])
        return bounds

    def _pruned_top_k(self, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Exactly what `_top_k(get_scores(ids), k)` returns, scoring only the documents that hold a query's
        rarer terms (MaxScore): the rarest terms' postings are the candidates, scored in full (every term, in
        the query's order, in float32 as bm25s adds them); once the k-th best candidate beats what the remaining
        terms could give a document without any of the rarer ones (the sum of their largest weights), no other
        document can enter or tie the top k. Before a term whose postings outnumber its impact list is added,
        the impact lists of it and the terms after it are tried instead (`_impact_top_k`). None when scoring the
        candidates would cost more than scoring every posting (the caller then scores exhaustively).

        Hand-written because bm25s scores every posting of every query term (common words' postings grow with
        the corpus: quadratic work over a growing collection), and tantivy scores with one-byte length norms,
        so its ranking is not bm25s's (nor, from Python, is its search pruned: see `distill.ir.tantivy_index`)."""
        bounds = self._term_bounds
        if bounds is None:
            return None
        sc = self.retriever.scores
        ind, ptr = sc["indices"], sc["indptr"]
        counts = Counter(ids.tolist())
        df = {t: int(ptr[t + 1] - ptr[t]) for t in counts}
        terms = sorted(counts, key=df.__getitem__)  # rarest first
        budget = self.n_docs + sum(df[t] * c for t, c in counts.items())
        rest = [0.0] * (len(terms) + 1)  # rest[j]: the most that terms j.. can add to a document
        for j in range(len(terms) - 1, -1, -1):
            rest[j] = rest[j + 1] + float(bounds[terms[j]]) * counts[terms[j]]
        cand = ind[:0].astype(np.int64)
        for j, t in enumerate(terms):
            if df[t] > IMPACT * k:  # this term and the rest hold more documents than their impact lists
                found = self._impact_top_k(ids, k, cand, terms[j:], budget)
                if found is not None:
                    return found
            docs = ind[ptr[t] : ptr[t + 1]].astype(np.int64)
            if max(len(cand), len(docs)) * len(ids) * PRUNE_COST > budget:
                return None  # scoring the candidates one by one would cost more than all the postings
            if j:  # two sorted runs: a stable sort merges them in linear time
                both = np.concatenate([cand, docs])
                both.sort(kind="stable")
                cand = both[np.append(True, both[1:] != both[:-1])]
            else:
                cand = docs
            if j + 1 < len(terms) and len(cand) < k:
                continue
            scores = self._candidate_scores(ids, cand)
            if j + 1 == len(terms):
                return self._top_k(scores, k, cand)
            kth = -np.partition(-scores, k - 1)[k - 1]
            if rest[j + 1] * (1 + 1e-5) < kth:
                return self._top_k(scores, k, cand)
        return None

    def _impact(self, t: int, size: int) -> tuple[np.ndarray, np.float32]:
        """Term t's impact list: the documents (sorted positions) whose weight for t is above its (size + 1)-th
        largest weight, and that weight (0 when t is in at most `size` documents: then the list is all of them).
        Every other document weighs at most that much for t. Kept per term: a corpus's common terms recur in
        query after query."""
        key = (t, size)
        found = self._impacts.get(key)
        if found is None:
            sc = self.retriever.scores
            lo, hi = int(sc["indptr"][t]), int(sc["indptr"][t + 1])
            docs, data = sc["indices"][lo:hi], sc["data"][lo:hi]
            if hi - lo <= size:
                found = (docs.astype(np.int64), np.float32(0))
            else:
                floor = np.partition(data, hi - lo - size - 1)[hi - lo - size - 1]
                found = (docs[data > floor].astype(np.int64), np.float32(floor))
            self._impacts[key] = found
        return found

    def _impact_top_k(
        self, ids: np.ndarray, k: int, cand: np.ndarray, rest: list[int], budget: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The exact top k where `cand` holds every document with one of the query's other terms and `rest` are
        the terms still to add, found from their impact lists rather than their postings; None when that cannot
        be shown exact.

        A document in neither `cand` nor any of the lists weighs at most each list's floor for each term of
        `rest`, so, added in the query's order in float32 (rounding keeps the order of sums), it scores at most
        the floors' sum: once the k-th best of `cand` and the lists scores above that sum, no other document can
        enter or tie the top k. Where they do not, longer lists (4x each time, the Threshold Algorithm reading
        deeper) lower the floors, until the candidates would cost more than every posting.

        This settles queries whose rarer terms match fewer than k documents beside common ones, which the bound
        on the common terms' largest weights cannot: at k = 100 on the sample world at 100x, half the queries
        (1,479 of the first 3,000; the others need no list, and none is left to the exhaustive scoring, which
        took 154 before)."""
        size = IMPACT * k
        while True:
            lists = [self._impact(t, size) for t in rest]
            extra = np.unique(np.concatenate([cand, *(docs for docs, _ in lists)]))
            if len(extra) * len(ids) * PRUNE_COST > budget:
                return None
            floors = dict(zip(rest, (floor for _, floor in lists), strict=True))
            bound = np.float32(0)
            for t in ids.tolist():
                if t in floors:
                    bound = np.float32(bound + floors[t])
            if len(extra) >= k or not bound:
                scores = self._candidate_scores(ids, extra)
                # the lists hold every posting (`extra` is every document that matches), or nothing outside them
                # can reach the k-th best
                if not bound or -np.partition(-scores, k - 1)[k - 1] > bound:
                    return self._top_k(scores, k, extra)
            size *= 4  # longer lists: lower floors (the Threshold Algorithm's deeper reading)

    @functools.cached_property
    def _impacts(self) -> dict[tuple[int, int], tuple[np.ndarray, np.float32]]:
        return {}

    def _candidate_scores(self, ids: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """BM25 of the documents `cand` (sorted positions) for the query's term ids, added up term by term in the
        query's order in float32, as bm25s's own scoring adds them."""
        sc = self.retriever.scores
        data, ind, ptr = sc["data"], sc["indices"], sc["indptr"]
        acc = np.zeros(len(cand), dtype=np.float32)
        for t in ids:
            docs = ind[ptr[t] : ptr[t + 1]]
            if not len(docs):
                continue
            at = np.minimum(np.searchsorted(docs, cand), len(docs) - 1)
            held = docs[at] == cand
            acc[held] += data[ptr[t] : ptr[t + 1]][at[held]]
        return acc

    @functools.cached_property
    def _doc_terms(self) -> sp.csr_matrix:
        """Documents x terms BM25 weights: the index's postings (terms x documents) turned round."""
        sc = self.retriever.scores
        by_term = sp.csr_matrix((sc["data"], sc["indices"], sc["indptr"]), shape=(self.n_terms, self.n_docs))
        return by_term.T.tocsr()

    @property
    def n_terms(self) -> int:
        return len(self.retriever.scores["indptr"]) - 1

    def term_matrix(self, tokens: Sequence[Sequence[str]], binary: bool = False) -> sp.csr_matrix:
        """Texts x terms of tokenised texts in the index's vocabulary (unknown terms ignored): how often each term
        occurs, or whether it does (`binary`)."""
        vocab = self.retriever.vocab_dict
        return count_matrix([[vocab[t] for t in toks if t in vocab] for toks in tokens], self.n_terms, binary)

    def score_pairs(
        self, queries: Sequence[str], q_idx: np.ndarray, d_idx: np.ndarray, chunk: int = PAIR_CHUNK
    ) -> np.ndarray:
        """BM25 of each pair (queries[q_idx[i]], document d_idx[i]), as `search` scores it, in O(pairs x terms):
        query-term counts times the index's document-term weights, where a score vector per query would cost
        O(queries x documents)."""
        counts = self.term_matrix(self.tokenize(queries, ids=False))
        out = pair_dots(counts, self._doc_terms, q_idx, d_idx, chunk).astype(np.float32)
        extra = getattr(self.retriever, "nonoccurrence_array", None)
        if extra is not None:  # bm25l / bm25+: every document gets the query terms' non-occurrence score
            out += np.asarray(counts @ extra, dtype=np.float32)[q_idx]
        return out

    def search(self, queries: Sequence[str], k: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(doc positions, scores) per query, best first, zero-score (non-matching) documents removed."""
        if k < 1:
            raise ConfigError(f"retrieval.k={k} must be at least 1")
        if "data" not in self.retriever.scores:
            raise RuntimeError(
                "this BM25 index kept only what scoring pairs needs (pairs_only): not searchable"
            )
        k = min(k, self.n_docs)
        vocab = self.retriever.vocab_dict
        qtokens = [[t for t in q if t in vocab] for q in self.tokenize(queries, ids=False)]
        out_ids: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(queries)
        out_scores: list[np.ndarray] = [np.empty(0, dtype=np.float32)] * len(queries)
        for i, toks in enumerate(qtokens):
            if toks:
                ids = np.asarray(self.retriever.get_tokens_ids(toks), dtype=np.int64)
                found = self._pruned_top_k(ids, k)
                if found is None:
                    found = self._top_k(self.retriever.get_scores_from_ids(ids), k)
                out_ids[i], out_scores[i] = found
        return out_ids, out_scores
