"""The translation family: hand-worked tables, a dense NumPy reference at several block sizes, out-of-fold scoring
of source queries, both sources (qrels and clicks), and its options' checks."""

import os
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from distill.data.beir import Dataset
from distill.errors import ConfigError
from distill.features import translation
from distill.features.family import FeatureContext, load_families, with_positions
from distill.features.schema import FeatureOptions
from distill.features.translation import TranslationFeatures

RC = SimpleNamespace(fields=("title", "text"), stemmer=None, stopwords=None, lowercase=True)
DOCS = {
    "d1": "apple pie",
    "d2": "apple tart",
    "d3": "banana split",
    "d4": "cherry cake",
    "d5": "banana bread",
}


def world(
    queries: dict[str, str], judged: list[tuple[str, str]], clicks: list[tuple[str, str]] | None = None
):
    corpus = pd.DataFrame({"title": "", "text": list(DOCS.values())}, index=pd.Index(list(DOCS)))
    q = pd.DataFrame({"text": list(queries.values()), "timestamp": pd.NaT}, index=pd.Index(list(queries)))
    qrels = {"train": pd.DataFrame(judged, columns=["qid", "docid"]).assign(relevance=1)}
    log = None
    if clicks is not None:
        log = pd.DataFrame(
            [(i, qid, docid, 1, True, 5.0) for i, (qid, docid) in enumerate(clicks)],
            columns=["session", "qid", "docid", "position", "clicked", "dwell_s"],
        ).assign(timestamp=pd.Timestamp("2025-01-01", tz="UTC"))
    return Dataset("hand", corpus, q, qrels, log)


def features(ds: Dataset, rows: list[tuple[str, str]], wanted=("judged_translation",), **options):
    fam = TranslationFeatures(**options)
    train = sorted(ds.qrels["train"].qid.unique())
    ctx = FeatureContext(ds, FeatureOptions(), RC, {"train": train}, chunk_rows=2)
    fam.prepare(ctx, set(wanted))
    frame = with_positions(ctx, pd.DataFrame(rows, columns=["qid", "docid"]))
    return fam.compute(ctx, frame, set(wanted))


def other_folds(a: str, b: str, folds: int = 2) -> bool:
    return zlib.crc32(a.encode()) % folds != zlib.crc32(b.encode()) % folds


def test_a_query_word_no_document_holds_is_scored_by_the_terms_its_judged_documents_hold():
    # fruitx, which no document holds, is in two train queries, judged d1 (apple pie) and d2 (apple tart). Shares
    # of their judged documents, averaged over the two, minus the corpus's share: apple 1 - 2/5 = 0.6, pie and
    # tart 0.5 - 1/5 = 0.3, banana 0 - 2/5 (dropped). q9, judged nowhere, is scored with that table.
    ds = world({"q1": "fruitx pie", "q2": "fruitx tart", "q9": "fruitx"}, [("q1", "d1"), ("q2", "d2")])
    rows = [("q9", d) for d in DOCS]
    got = features(ds, rows)["judged_translation"]
    np.testing.assert_allclose(got, [0.9, 0.9, 0.0, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(
        features(ds, rows, most=1)["judged_translation"], [0.6, 0.6, 0, 0, 0], rtol=1e-6
    )
    np.testing.assert_allclose(features(ds, rows, threshold=0.5)["judged_translation"], [0.6, 0.6, 0, 0, 0])
    np.testing.assert_allclose(features(ds, rows, close=0.75)["judged_translation"], [0.6, 0.6, 0, 0, 0])
    # fruitx is held by two source queries: asking for three leaves it untranslated
    assert not features(ds, rows, min_queries=3)["judged_translation"].any()


def test_a_source_query_is_scored_with_the_table_of_the_other_folds():
    assert other_folds("q1", "q4")  # the folds are a hash of the qid: q1's fold holds q4 only with folds=2
    ds = world({"q1": "fruitx pie", "q4": "fruitx tart"}, [("q1", "d1"), ("q4", "d2")])
    rows = [("q1", "d1"), ("q1", "d2"), ("q4", "d1"), ("q4", "d2")]
    # q1's rows: the table from q4 alone (apple 1 - 0.4, tart 1 - 0.2); q4's: from q1 alone (apple, pie)
    got = features(ds, rows, folds=2, min_queries=1)["judged_translation"]
    np.testing.assert_allclose(got, [0.6, 1.4, 1.4, 0.6], rtol=1e-6)
    # a source query's own judgements never reach its own rows: moving q1's judgement to d4 leaves them as they
    # were, and moves q4's
    moved = world({"q1": "fruitx pie", "q4": "fruitx tart"}, [("q1", "d4"), ("q4", "d2")])
    again = features(moved, rows, folds=2, min_queries=1)["judged_translation"]
    np.testing.assert_allclose(again[:2], got[:2], rtol=1e-6)
    assert not np.allclose(again[2:], got[2:])
    # with one other source query per fold, min_queries=2 translates nothing for them
    assert not features(ds, rows, folds=2)["judged_translation"].any()


def test_every_word_is_translated_but_never_to_itself_with_words_all():
    ds = world({"q1": "apple", "q2": "apple", "q9": "apple"}, [("q1", "d1"), ("q2", "d1")])
    rows = [("q9", d) for d in DOCS]
    assert not features(ds, rows)["judged_translation"].any()  # apple is a document word: not translated
    # apple -> pie: 1 - 0.2 (apple itself, 1 - 0.4, is left out)
    got = features(ds, rows, words="all")["judged_translation"]
    np.testing.assert_allclose(got, [0.8, 0, 0, 0, 0], rtol=1e-6)


def test_clicks_translate_as_judgements_do():
    queries = {"q1": "fruitx pie", "q2": "fruitx tart", "q9": "fruitx"}
    marks = [("q1", "d1"), ("q2", "d2")]
    ds = world(queries, marks, clicks=marks)
    rows = [(q, d) for q in queries for d in DOCS]
    got = features(ds, rows, wanted=("click_translation", "judged_translation"), min_queries=1)
    np.testing.assert_allclose(got["click_translation"], got["judged_translation"])
    assert got["click_translation"].any()
    # without a click log the feature is left out, not filled in
    assert "click_translation" not in features(world(queries, marks), rows, wanted=("click_translation",))


def reference(ds: Dataset, rows: list[tuple[str, str]], marks: list[tuple[str, str]], **o) -> np.ndarray:
    """The docstring's definition with dense arrays and loops, `words: query_only`."""
    docs = [set(t.split()) for t in ds.corpus.text]
    terms = list(dict.fromkeys(w for t in ds.corpus.text for w in t.split()))  # ties: the first seen first
    held = np.array([[t in d for t in terms] for d in docs], float)
    background = held.mean(axis=0)
    qwords = {q: {w for w in t.split() if w not in terms} for q, t in ds.queries.text.items()}
    marked: dict[str, set[int]] = {}
    for q, d in marks:
        marked.setdefault(q, set()).add(list(ds.corpus.index).index(d))
    fold = {q: zlib.crc32(q.encode()) % o["folds"] for q in ds.queries.index}

    def table(sources: list[str]) -> dict[str, np.ndarray]:
        out = {}
        for w in {w for q in sources for w in qwords[q]}:
            mine = [q for q in sources if w in qwords[q]]
            if len(mine) < o["min_queries"]:
                continue
            share = np.mean([held[sorted(marked[q])].mean(axis=0) for q in mine], axis=0) - background
            order = sorted(range(len(terms)), key=lambda t: (-round(share[t], 9), t))[: o["most"]]
            keep = np.zeros(len(terms))
            for t in order:
                if share[t] >= o["threshold"] and share[t] >= o["close"] * share[order[0]]:
                    keep[t] = share[t]
            out[w] = keep
        return out

    every = table(sorted(marked))
    out = []
    for q, d in rows:
        t = table([s for s in sorted(marked) if fold[s] != fold[q]]) if q in marked else every
        di = list(ds.corpus.index).index(d)
        out.append(sum(float(t[w] @ held[di]) for w in qwords[q] if w in t))
    return np.array(out)


def random_world() -> tuple[Dataset, list[tuple[str, str]], list[tuple[str, str]]]:
    """30 documents of 4 of 12 words; 40 queries of two aliases and a document word; 30 of them judged."""
    rng = np.random.default_rng(3)
    doc_words, aliases = [f"w{i}" for i in range(12)], [f"a{i}" for i in range(5)]
    texts = [" ".join(rng.choice(doc_words, size=4, replace=False)) for _ in range(30)]
    corpus = pd.DataFrame({"title": "", "text": texts}, index=pd.Index([f"d{i}" for i in range(30)]))
    queries = {
        f"q{i}": " ".join([*rng.choice(aliases, 2, replace=False), rng.choice(doc_words)]) for i in range(40)
    }
    marks = sorted({(f"q{i}", f"d{j}") for i in range(30) for j in rng.choice(30, size=3)})
    q = pd.DataFrame({"text": list(queries.values()), "timestamp": pd.NaT}, index=pd.Index(list(queries)))
    qrels = {"train": pd.DataFrame(marks, columns=["qid", "docid"]).assign(relevance=1)}
    ds = Dataset("random", corpus, q, qrels, None)
    rows = [(f"q{i}", f"d{j}") for i in range(40) for j in range(0, 30, 3)]
    return ds, rows, marks


@pytest.mark.parametrize("block", [1, 7, 1_000_000])
@pytest.mark.parametrize("options", [dict(), dict(folds=3, min_queries=1, most=2, close=0.5, threshold=0.05)])
def test_features_equal_a_dense_reference_at_any_block_of_words(monkeypatch, block, options):
    monkeypatch.setattr(translation, "BLOCK_SHARES", block)
    ds, rows, marks = random_world()
    o = dict(threshold=0.2, close=0.0, most=3, min_queries=2, folds=5) | options
    got = features(ds, rows, **o)["judged_translation"]
    expected = reference(ds, rows, marks, **o)
    assert expected.any()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("threshold", 0, r"features\.families\.translation\.threshold=0: give a share in \(0, 1\]"),
        ("close", 2, r"translation\.close=2: give a fraction"),
        ("most", 0, r"translation\.most=0: give a whole number >= 1"),
        ("folds", 1, r"translation\.folds=1: give a whole number >= 2"),
        ("words", "some", r"translation\.words='some': choose one of \['query_only', 'all'\]"),
    ],
)
def test_a_bad_option_is_one_line_naming_it(key, value, match):
    spec = {"translation": {"_target_": "distill.features.translation.TranslationFeatures", key: value}}
    with pytest.raises(ConfigError, match=match):
        load_families(spec)


def test_the_features_are_the_same_bits_under_any_hash_seed():
    """Word ids follow the queries' texts, not a set's order of strings, which each process's hash seed changes
    (and with it the order the tables' scores are added in)."""
    script = (
        "from tests.features.test_translation import features, random_world; "
        "ds, rows, _ = random_world(); "
        "print(features(ds, rows, min_queries=1, most=8, threshold=0.01)['judged_translation'].tobytes().hex())"
    )
    root = Path(__file__).resolve().parents[2]
    out = {
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=root,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3", "4")
    }
    assert len(out) == 1
