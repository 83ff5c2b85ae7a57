import numpy as np
import pytest

from distill.ir.bm25 import BM25Index

DOCS = [
    "the cat sat on the mat",
    "dogs chase cats in the park",
    "cat cat cat",
    "stock markets fell sharply today",
    "a dog and a cat",
    "markets rise",
]
QUERIES = ["cat on a mat", "dog dog park", "markets", "zebra"]


@pytest.mark.parametrize("method", ["lucene", "bm25l"])
def test_pair_scores_equal_the_full_score_vectors(method):
    idx = BM25Index(DOCS, method=method)
    q_idx = np.repeat(np.arange(len(QUERIES)), len(DOCS))
    d_idx = np.tile(np.arange(len(DOCS)), len(QUERIES))
    got = idx.score_pairs(QUERIES, q_idx, d_idx, chunk=5)  # several chunks
    vocab = idx.retriever.vocab_dict
    for qi, toks in enumerate(idx.tokenize(QUERIES, ids=False)):
        toks = [t for t in toks if t in vocab]
        want = idx.retriever.get_scores(toks) if toks else np.zeros(len(DOCS))
        np.testing.assert_allclose(got[q_idx == qi], want, rtol=1e-6, atol=1e-6)
    assert (got[q_idx == 3] == 0).all()  # no known term


def test_search_ranks_by_score_then_document_position():
    idx = BM25Index(["bee ant", "ant bee", "cow", "ant"], stemmer=None, stopwords=None)
    ids, scores = idx.search(["ant bee"], k=3)
    assert ids[0].tolist() == [0, 1, 3] and scores[0][0] == scores[0][1] > scores[0][2]
    ids, _ = idx.search(["ant bee"], k=1)
    assert ids[0].tolist() == [0]  # of two tied documents, the first
    q_idx, d_idx = np.zeros(4, dtype=int), np.arange(4)
    np.testing.assert_allclose(idx.score_pairs(["ant bee"], q_idx, d_idx)[[0, 1, 3]], scores[0], rtol=1e-6)


def test_a_given_tokenisation_is_indexed_and_scored_as_it_is():
    """A model's own tokens (here: whitespace words, no stemming or stop words) replace the word tokenisation:
    "cats" is not "cat", and "the" counts."""

    def split(texts):
        return [t.split() for t in texts]

    idx = BM25Index(DOCS, tokenizer=split)
    assert idx.tokenize(["the cats"]) == [["the", "cats"]]
    q_idx = np.repeat(np.arange(len(QUERIES)), len(DOCS))
    d_idx = np.tile(np.arange(len(DOCS)), len(QUERIES))
    got = idx.score_pairs(QUERIES, q_idx, d_idx)
    for qi, toks in enumerate(split(QUERIES)):
        toks = [t for t in toks if t in idx.retriever.vocab_dict]
        want = idx.retriever.get_scores(toks) if toks else np.zeros(len(DOCS))
        np.testing.assert_allclose(got[q_idx == qi], want, rtol=1e-6, atol=1e-6)
    cat = got[q_idx == 0]
    assert cat[1] == 0 and cat[0] > 0  # "cats" (doc 1) does not match "cat"; doc 0 has "cat", "on", "mat"
    words = BM25Index(DOCS).score_pairs(QUERIES, q_idx, d_idx)
    assert words[q_idx == 0][1] > 0  # the stemmed word tokenisation matches it


@pytest.mark.parametrize("method", ["lucene", "bm25+"])
def test_an_index_built_from_compact_tokens_equals_bm25s_own(method):
    """The corpus tokenised a few texts at a time into one int32 array (`CompactTokens`) indexes to the scores
    bm25s gives when it tokenises the whole corpus itself."""
    import bm25s

    from distill.ir.bm25 import CompactTokens, Tokenizer

    tok = Tokenizer("english", "en", True)
    ours, theirs = bm25s.BM25(method=method), bm25s.BM25(method=method)
    compact = CompactTokens(DOCS, tok, chunk=2)  # three chunks
    assert len(compact) == len(DOCS) and compact[1:3] == [compact[1], compact[2]]
    ours.index(compact, show_progress=False)
    theirs.index(tok(DOCS, ids=True), show_progress=False)
    for toks in tok(QUERIES, ids=False):
        known = [t for t in toks if t in theirs.vocab_dict]
        if known:
            np.testing.assert_array_equal(ours.get_scores(known), theirs.get_scores(known))


def test_compact_tokens_are_freed_when_let_go_without_the_cyclic_collector():
    """The features stage lets the corpus's tokens go once no family left reads them: their arrays must go then,
    not when Python's cyclic collector next runs (a reference cycle kept 155 MiB at 100x the sample world)."""
    import gc
    import weakref

    from distill.ir.bm25 import CompactTokens, Tokenizer

    gc.disable()
    try:
        compact = CompactTokens(DOCS, Tokenizer(), chunk=2)
        assert compact.ids is compact  # what bm25s reads
        gone = weakref.ref(compact)
        del compact
        assert gone() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("method,k", [("lucene", 3), ("lucene", 50), ("robertson", 5), ("bm25l", 4)])
def test_search_equals_the_top_of_bm25s_full_score_vectors(method, k):
    """`search` adds up only the query terms' postings; its documents and scores are those of bm25s's own score
    vector over every document, best first, ties by position, zero scores left out."""
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(30)]
    docs = [" ".join(rng.choice(words, size=int(rng.integers(1, 12)))) for _ in range(200)]
    queries = [" ".join(rng.choice(words, size=int(rng.integers(1, 4)))) for _ in range(40)] + [
        "w1 w1",
        "zzz",
    ]
    idx = BM25Index(docs, method=method, stemmer=None, stopwords=None)
    ids, scores = idx.search(queries, k)
    for qi, toks in enumerate(idx.tokenize(queries, ids=False)):
        toks = [t for t in toks if t in idx.retriever.vocab_dict]
        full = idx.retriever.get_scores(toks) if toks else np.zeros(len(docs), np.float32)
        order = np.lexsort((np.arange(len(docs)), -full))
        want = [d for d in order if full[d] > 0][:k]
        assert ids[qi].tolist() == want
        np.testing.assert_array_equal(scores[qi], full[want].astype(np.float32))


@pytest.mark.parametrize("k", [1, 10, 40])
def test_pruned_search_is_exactly_the_exhaustive_one(k):
    """On a Zipfian vocabulary (a few common words in most documents, many rare ones) the search scores only the
    documents that hold a query's rarer words, and must still return bm25s's exhaustive top k to the bit: the
    same documents, the same float32 scores, ties (repeated documents) by position."""
    rng = np.random.default_rng(1)
    p = 1.0 / np.arange(1, 401) ** 1.1
    words = np.array([f"w{i}" for i in range(400)])
    docs = [" ".join(rng.choice(words, size=int(rng.integers(3, 30)), p=p / p.sum())) for _ in range(1500)]
    docs += docs[:300]  # repeated documents: tied scores, broken by position
    queries = [
        " ".join([*rng.choice(words[:5], size=int(rng.integers(0, 3))), *rng.choice(words[20:], size=2)])
        for _ in range(150)
    ] + ["w0 w0 w1 w300", "w2"]
    idx = BM25Index(docs, stemmer=None, stopwords=None)
    ids, scores = idx.search(queries, k)
    pruned = 0
    for qi, toks in enumerate(idx.tokenize(queries, ids=False)):
        toks = [t for t in toks if t in idx.retriever.vocab_dict]
        full = idx.retriever.get_scores(toks)
        order = np.lexsort((np.arange(len(docs)), -full))
        want = [d for d in order if full[d] > 0][:k]
        assert ids[qi].tolist() == want
        np.testing.assert_array_equal(scores[qi], full[want])
        pruned += idx._pruned_top_k(np.asarray(idx.retriever.get_tokens_ids(toks)), k) is not None
    assert pruned > len(queries) // 2  # most queries took the pruned path


def test_a_corpus_tokenised_on_several_processes_equals_one_tokenised_here():
    """Parts tokenised by worker processes, each in its own vocabulary, give the very token ids, lengths and
    vocabulary of one pass here (the ids are numbered by first occurrence either way)."""
    from distill.ir.bm25 import CompactTokens, Tokenizer

    texts = [
        f"the {w} cats ran" if i % 3 else f"dogs {w} barking loudly {i}"
        for i, w in enumerate("abcdefghijk" * 3)
    ]
    texts[4] = ""
    one = CompactTokens(texts, Tokenizer(), chunk=len(texts))
    for workers in (1, 2):
        parts = CompactTokens(texts, Tokenizer(), chunk=4, workers=workers)
        assert parts.vocab == one.vocab
        assert parts.flat.tolist() == one.flat.tolist() and parts.offsets.tolist() == one.offsets.tolist()
    assert one[4] == [] and one[1] == [one.vocab[t] for t in ("cat", "ran")]


def test_tokenising_processes_read_a_corpus_from_its_file_themselves(tiny_beir, monkeypatch):
    """A corpus loaded without its texts is tokenised by forked processes that read their parts from
    corpus.jsonl themselves: the tokens are those of the texts held in memory, and this process never reads the
    file (only the parts' arrays come back)."""
    import sys

    from distill.data import beir
    from distill.data.beir import load_beir
    from distill.ir.bm25 import CompactTokens, Tokenizer

    docs = [
        {"_id": f"d{i}", "title": f"T{i % 4}", "text": f"cats {'dogs ' * (i % 5)}ran {i}"} for i in range(30)
    ]
    root = tiny_beir(corpus=docs)
    monkeypatch.setattr(beir, "JSON_BLOCK_BYTES", 300)  # several blocks
    held = CompactTokens(load_beir(root).lazy_doc_texts(), Tokenizer(), chunk=30)
    bare = load_beir(root, texts=False)
    for workers in (2, 1):
        forked = CompactTokens(bare.lazy_doc_texts(), Tokenizer(), chunk=7, workers=workers)
        assert forked.vocab == held.vocab and forked.flat.tolist() == held.flat.tolist()
        assert forked.offsets.tolist() == held.offsets.tolist()
        assert bare.corpus_file is not None
        read_here = bare.corpus_file._frames is not None
        assert read_here == (workers == 1 or sys.platform != "linux")


def _postings(bm):
    sc = bm.scores
    return sc["data"], sc["indices"], sc["indptr"], getattr(bm, "nonoccurrence_array", None)


def _assert_same_index(texts, method):
    import bm25s

    from distill.ir.bm25 import ArrayBM25, CompactTokens, Tokenizer

    tok = Tokenizer("english", "en", True)
    compact = CompactTokens(texts, tok, chunk=max(1, len(texts) // 3))
    ours, theirs = ArrayBM25(method=method), bm25s.BM25(method=method)
    # bm25s's own build over the same ids (read as lists: its per-document loop)
    theirs.index((list(compact), dict(compact.vocab)), show_progress=False)
    ours.index(compact, show_progress=False)
    for a, b in zip(_postings(ours), _postings(theirs), strict=True):
        if b is None:
            assert a is None
        else:
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
    assert ours.vocab_dict == theirs.vocab_dict


@pytest.mark.parametrize("method", ["lucene", "robertson", "atire", "bm25l", "bm25+"])
def test_the_array_build_gives_bm25s_own_postings_bit_for_bit(method, monkeypatch):
    """`ArrayBM25` computes the index from the token arrays a step of documents at a time (here 2 per step) and
    gives the weights, term ids and offsets of bm25s's per-document build, in its dtypes."""
    import distill.ir.bm25 as bm25_mod

    monkeypatch.setattr(bm25_mod, "BUILD_DOCS", 2)
    _assert_same_index(DOCS, method)


@pytest.mark.parametrize("method", ["lucene", "bm25+"])
def test_the_array_build_gives_bm25s_own_postings_on_a_real_corpus(method, shared_data, make_cfg):
    from distill.data.prepare import load_dataset

    ds = load_dataset(make_cfg("data=cranfield"))
    _assert_same_index(ds.doc_texts(ds.corpus.index), method)


@pytest.mark.parametrize("step", [2, 100_000])
@pytest.mark.parametrize("method", ["lucene", "bm25l"])
def test_an_index_built_for_pairs_only_scores_them_as_a_full_one(method, step, monkeypatch):
    """`pairs_only` never builds the term-major postings: the pair scores equal a searchable index's exactly,
    whether the documents are taken in one step or two at a time."""
    import distill.ir.bm25 as bm25_mod

    monkeypatch.setattr(bm25_mod, "BUILD_DOCS", step)
    q_idx, d_idx = np.repeat(np.arange(len(QUERIES)), len(DOCS)), np.tile(np.arange(len(DOCS)), len(QUERIES))
    full, pairs = BM25Index(DOCS, method=method), BM25Index(DOCS, method=method, pairs_only=True)
    assert "data" not in pairs.retriever.scores and pairs.n_terms == full.n_terms
    np.testing.assert_array_equal(pairs.retriever.scores["indptr"], full.retriever.scores["indptr"])
    np.testing.assert_array_equal(
        pairs.score_pairs(QUERIES, q_idx, d_idx), full.score_pairs(QUERIES, q_idx, d_idx)
    )
    with pytest.raises(RuntimeError, match="kept only what scoring pairs needs"):
        pairs.search(QUERIES, k=3)


@pytest.mark.parametrize("k", [20, 60])
def test_queries_whose_rare_terms_match_fewer_than_k_documents_are_pruned_exactly(k):
    """Common words in most documents, rare words in fewer than k: a query's rare words cannot fill its top k, and
    the common words' largest weights do not bound the rest. Their impact lists (each common word's best
    documents) must settle it, and still give bm25s's exhaustive top k to the bit, ties by position."""
    rng = np.random.default_rng(3)
    common = [f"c{i}" for i in range(4)]
    rare = [f"r{i}" for i in range(300)]
    docs = []
    for _ in range(3000):
        words = [c for c in common if rng.random() < 0.8] * int(rng.integers(1, 4))
        words += list(rng.choice(rare, size=int(rng.integers(0, 3))))
        words += ["filler"] * int(rng.integers(0, 20))
        docs.append(" ".join(rng.permutation(words)) if words else "filler")
    docs += docs[:200]  # repeated documents: tied scores, broken by position
    queries = [
        " ".join(
            [
                *rng.choice(rare, size=int(rng.integers(1, 3))),
                *rng.choice(common, size=int(rng.integers(1, 3))),
            ]
        )
        for _ in range(80)
    ] + ["c0", "c1 c2", "c3 c3 r5"]
    idx = BM25Index(docs, stemmer=None, stopwords=None)
    ids, scores = idx.search(queries, k)
    pruned = 0
    for qi, toks in enumerate(idx.tokenize(queries, ids=False)):
        full = idx.retriever.get_scores(toks)
        order = np.lexsort((np.arange(len(docs)), -full))
        want = [d for d in order if full[d] > 0][:k]
        assert ids[qi].tolist() == want
        np.testing.assert_array_equal(scores[qi], full[want])
        term_ids = np.asarray(idx.retriever.get_tokens_ids(toks))
        pruned += idx._pruned_top_k(term_ids, k) is not None
    assert pruned > 0.9 * len(queries)  # the exhaustive scoring is left for a few queries at most


def test_an_impact_list_holds_the_documents_above_its_floor():
    """`_impact(t, size)`: the documents whose weight for t is above its (size + 1)-th largest weight, and that
    weight; every other document weighs at most the floor. A term in at most `size` documents lists them all."""
    rng = np.random.default_rng(4)
    docs = [
        " ".join(["aa"] * int(rng.integers(1, 5)) + ["bb"] * int(rng.integers(0, 30))) for _ in range(500)
    ]
    idx = BM25Index(docs, stemmer=None, stopwords=None)
    t = idx.retriever.get_tokens_ids(["aa"])[0]
    weights = idx.retriever.get_scores(["aa"])
    listed, floor = idx._impact(t, 40)
    assert floor == np.sort(weights)[::-1][40]
    assert set(listed.tolist()) == set(np.flatnonzero(weights > floor).tolist())
    assert 0 < len(listed) <= 40
    everything, zero = idx._impact(t, 10_000)
    assert zero == 0 and everything.tolist() == np.flatnonzero(weights > 0).tolist()


def test_forked_processes_read_what_this_process_held_before_they_started():
    """`forked_pool`: on Linux, processes forked from this one see its memory (a global set before the first
    task), without it being pickled; one worker means no pool (the caller works here)."""
    import sys

    from distill.ir import pools

    with pools.forked_pool(1) as none:
        assert none is None
    if sys.platform != "linux":
        pytest.skip("processes are forked on Linux only")
    _HELD["index"] = np.arange(5)
    try:
        with pools.forked_pool(2) as pool:
            assert pool is not None
            got = list(pools.ordered_submit(pool, _read_held, [1, 3], 2))
    finally:
        _HELD.clear()
    assert got == [1, 3]


_HELD: dict = {}


def _read_held(i: int) -> int:
    return int(_HELD["index"][i])


def test_an_index_of_several_parts_tokenises_them_on_processes(monkeypatch):
    """`BM25Index` over more texts than one part (`CompactTokens`' chunk) tokenises the parts on forked processes,
    as the features' tokens do, and gets the ids of one pass: the stage's own index was tokenised on one process
    because it handed `tokenised_parts` a method around its tokenizer, which it does not fork for."""
    import os
    import sys

    from distill.ir import bm25

    if sys.platform != "linux" or (os.cpu_count() or 1) < 2:
        pytest.skip("processes are forked on Linux with two CPUs or more")
    asked: list[int] = []
    real = bm25.forked_pool

    def spy(workers):
        asked.append(workers)
        return real(workers)

    monkeypatch.setattr(bm25, "forked_pool", spy)
    texts = [f"word{i % 97} other{i % 13} text" for i in range(50_001)]
    idx = BM25Index(texts, stemmer=None, stopwords=None)
    assert asked and asked[0] > 1
    monkeypatch.setattr(bm25, "forked_pool", lambda workers: real(1))
    here = BM25Index(texts, stemmer=None, stopwords=None)
    assert idx.retriever.vocab_dict == here.retriever.vocab_dict
    for key in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(idx.retriever.scores[key], here.retriever.scores[key])


@pytest.mark.parametrize("chunk", [1, 3, 1_000])
def test_pair_dots_equal_the_dense_rows_products_at_any_step_of_pairs(chunk):
    import scipy.sparse as sp

    from distill.ir.bm25 import pair_dots

    rng = np.random.default_rng(0)
    a = sp.random(6, 9, density=0.4, format="csr", random_state=1, dtype=np.float64)
    b = sp.random(8, 9, density=0.4, format="csr", random_state=2, dtype=np.float64)
    a_idx, b_idx = rng.integers(0, 6, 20), rng.integers(0, 8, 20)
    expected = (a.toarray()[a_idx] * b.toarray()[b_idx]).sum(axis=1)
    assert expected.any()
    np.testing.assert_allclose(pair_dots(a, b, a_idx, b_idx, chunk=chunk), expected, rtol=1e-12)


def test_an_index_reports_the_postings_it_holds():
    """`nbytes`: 4 bytes of weight and 4 of term or document id per distinct (document, term) entry, plus the
    offsets of the layout held: terms for a searchable index (and documents too once pairs are scored: it then
    holds both layouts), documents and terms for a `pairs_only` one. Counted from the tokens, not the arrays."""
    full, pairs = BM25Index(DOCS), BM25Index(DOCS, pairs_only=True)
    entries = sum(len(set(toks)) for toks in full.tokenize(DOCS, ids=False))
    n_docs, n_terms = len(DOCS), full.n_terms
    by_doc = (n_docs + 1) * pairs._doc_terms.indptr.itemsize  # SciPy keeps small offsets as int32
    assert full.nbytes() == 8 * entries + 8 * (n_terms + 1)
    assert pairs.nbytes() == 8 * entries + by_doc + 8 * (n_terms + 1)
    assert pairs.bytes_per_doc() == pairs.nbytes() / n_docs
    full.score_pairs(QUERIES[:1], np.zeros(1, int), np.zeros(1, int))  # the document-major layout made too
    assert full.nbytes() == 16 * entries + by_doc + 8 * (n_terms + 1)
