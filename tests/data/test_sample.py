import hashlib

import pandas as pd
import pytest

from distill.data.clicks import simulate_clicks
from distill.data.prepare import dataset_dir, load_dataset
from distill.data.sample import FRESH_WORDS, SampleOptions, generate
from distill.errors import ConfigError


def _digest(root):
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_sample_world_is_deterministic(tmp_path):
    opts = SampleOptions(n_docs=400, n_train=30, n_test=10, n_topics=10, sessions_per_query=3)
    generate(tmp_path / "a", opts)
    generate(tmp_path / "b", opts)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_sample_world_shape(tiny_sample_cfg):
    ds = load_dataset(tiny_sample_cfg())
    assert len(ds.corpus) == 500
    assert len(ds.split_qids("train")) == 40 and len(ds.split_qids("test")) == 20
    assert set(ds.qrels["train"].relevance) <= {1, 2} and 2 in set(ds.qrels["train"].relevance)
    assert ds.corpus["timestamp"].notna().all() and ds.queries["timestamp"].notna().all()
    # train queries come before the log cut-off, test queries after it
    cutoff = pd.Timestamp("2026-01-01", tz="UTC")
    assert (ds.queries.loc[ds.split_qids("train"), "timestamp"] < cutoff).all()
    assert (ds.queries.loc[ds.split_qids("test"), "timestamp"] >= cutoff).all()
    assert ds.clicks is not None and (ds.clicks["timestamp"] < cutoff).all()
    assert any(set(t.split()) & set(FRESH_WORDS) for t in ds.queries.text)


def test_regenerates_only_when_options_change(tiny_sample_cfg):
    cfg = tiny_sample_cfg()
    path = dataset_dir(cfg)
    mtime = (path / "corpus.jsonl").stat().st_mtime_ns
    assert (dataset_dir(cfg) / "corpus.jsonl").stat().st_mtime_ns == mtime
    dataset_dir(tiny_sample_cfg("data.options.seed=5"))
    assert (path / "corpus.jsonl").stat().st_mtime_ns != mtime


def test_unknown_sample_option(tiny_sample_cfg):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['n_dogs'\]"):
        dataset_dir(tiny_sample_cfg("+data.options.n_dogs=3"))


def test_click_model_is_position_biased_and_relevance_driven():
    ranking = pd.DataFrame({"qid": ["q"] * 10, "docid": [f"d{i}" for i in range(10)], "rank": range(1, 11)})
    qrels = pd.DataFrame({"qid": ["q", "q"], "docid": ["d0", "d5"], "relevance": [2, 2]})
    log = simulate_clicks(ranking, qrels, sessions_per_query=4000, p_swap=0.0, seed=1)
    ctr = log.groupby("docid")["clicked"].mean()
    assert ctr["d0"] > 2 * ctr["d5"] > 0  # same relevance, lower position: fewer clicks
    assert ctr["d5"] > 2 * ctr["d6"]  # same position neighbourhood, relevant: more clicks
    assert (log.loc[log.clicked, "dwell_s"] > 0).all() and (log.loc[~log.clicked, "dwell_s"] == 0).all()
    assert len(log) == 40000 and set(log.position) == set(range(1, 11))


def test_the_click_log_is_the_same_for_any_batch_of_sessions(tmp_path):
    """The click model draws its numbers for every session at once and makes the rows a batch of sessions at a
    time (`click_batches`), each batch a row group of the written log: a batch smaller than the log gives the log
    of one batch, frame and file."""
    from distill.data.clicks import click_batches, write_log

    ranking = pd.DataFrame(
        {"qid": [f"q{i // 7}" for i in range(35)], "docid": [f"d{i % 11}" for i in range(35)], "rank": 0}
    )
    ranking["rank"] = ranking.groupby("qid").cumcount() + 1
    qrels = pd.DataFrame({"qid": ["q0", "q3", "q4"], "docid": ["d0", "d10", "d6"], "relevance": [2, 1, 3]})
    whole = simulate_clicks(ranking, qrels, sessions_per_query=9, seed=3)
    batches = list(click_batches(ranking, qrels, sessions_per_query=9, seed=3, batch_sessions=4))
    assert len(batches) == 12 and len(whole) == 45 * 7
    pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), whole)
    assert write_log(tmp_path, iter(batches)) == (len(whole), int(whole.clicked.sum()))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "logs" / "impressions.parquet"), whole)
    empty = simulate_clicks(ranking.iloc[:0], qrels)
    assert empty.empty and list(empty.columns) == list(whole.columns)


def test_make_data_counts_the_click_log_without_holding_it(tiny_sample_cfg, monkeypatch):
    """`make data` prints the click log's rows, counted a checked batch at a time (at 100x the sample world the
    log held whole was the stage's peak)."""
    from distill.data.beir import Dataset
    from distill.data.stage import run

    monkeypatch.setattr(
        Dataset, "clicks", property(lambda self: pytest.fail("the whole click log was loaded"))
    )
    cfg = tiny_sample_cfg()
    stats = run(cfg)
    assert stats["clicks"] == len(pd.read_parquet(dataset_dir(cfg) / "logs" / "impressions.parquet")) > 0


def test_simulated_clicks_for_any_beir_folder(tiny_beir):
    from distill.data.beir import load_beir
    from distill.data.clicks import add_simulated_clicks

    root = tiny_beir()
    log = add_simulated_clicks(root, sessions_per_query=50)
    ds = load_beir(root)
    assert ds.clicks is not None and len(ds.clicks) == len(log) > 0
    assert "SIMULATED" in (root / "logs" / "README.md").read_text()
    ctr = ds.clicks.groupby("docid").clicked.mean()
    assert ctr.get("d1", 0) > ctr.get("d4", 0)  # judged relevant for q1 vs never relevant


PINNED_V3 = {
    "corpus.jsonl": "bd44578afa6f78ee",
    "queries.jsonl": "ebb148eefd0c18d6",
    "qrels/train.tsv": "1b158696f0ab553b",
    "qrels/test.tsv": "4048f5f03d2fa240",
}
PINNED_V4 = {
    "corpus.jsonl": "331072caf3009eba",
    "queries.jsonl": "b3d9fc918133cf92",
    "qrels/train.tsv": "a326afaca84f6e6d",
    "qrels/test.tsv": "a25ad23abcea131c",
}


@pytest.mark.parametrize(
    "options,pinned,log_figures",
    [
        ({}, PINNED_V4, (1200, 66, 199, 3718.3, "2025-01-08 12:35:16+00:00", "d369")),
        # version 3's options draw version 3's world, recorded from the generator of that version
        ({"p_morph": 0.7}, PINNED_V3, (1167, 73, 226, 3469.2, "2025-01-01 17:44:49+00:00", "d212")),
    ],
    ids=["version-4", "version-3-options"],
)
def test_the_sample_world_of_this_version_is_pinned(tmp_path, options, pinned, log_figures):
    """The generator's output at SampleOptions.VERSION 4, and at version 3's options (version 3 differed only in
    its defaults): the same seed must draw the same world. A change that moves any of these bumps
    SampleOptions.VERSION (generated folders are then made again) and records the new world here."""
    assert SampleOptions.VERSION == 4
    opts = SampleOptions(n_docs=400, n_train=30, n_test=10, n_topics=10, sessions_per_query=3, **options)
    generate(tmp_path, opts)
    digest = {f: hashlib.sha256((tmp_path / f).read_bytes()).hexdigest()[:16] for f in pinned}
    assert digest == pinned
    log = pd.read_parquet(tmp_path / "logs" / "impressions.parquet")
    clicked = log[log.clicked]
    assert (
        len(log),
        len(clicked),
        int(clicked.position.sum()),
        round(float(log.dwell_s.sum()), 1),
        str(log.timestamp.min()),
        log.docid.iloc[-1],
    ) == log_figures


def test_version_4_aliases_are_in_no_document_and_recur_in_training_queries(tmp_path):
    """At version 4's defaults, the words queries use for concepts are aliases no document holds (so no lexical
    match reaches them), and nearly every alias a test query uses is in a training query too (so it can be
    learned)."""
    import json

    info = generate(tmp_path)
    assert (info["docs"], info["train_queries"], info["test_queries"]) == (6000, 600, 250)
    doc_words = set()
    with open(tmp_path / "corpus.jsonl") as f:
        for line in f:
            d = json.loads(line)
            doc_words.update(f"{d['title']} {d['text']}".split())
    queries = pd.read_json(tmp_path / "queries.jsonl", lines=True).set_index("_id")
    train = set(pd.read_csv(tmp_path / "qrels" / "train.tsv", sep="\t")["query-id"])
    test = set(pd.read_csv(tmp_path / "qrels" / "test.tsv", sep="\t")["query-id"])
    unseen = {q: set(queries.text[q].split()) - doc_words for q in queries.index}
    train_aliases = set().union(*(unseen[q] for q in train))
    test_aliases = set().union(*(unseen[q] for q in test))
    # most queries name at least one concept by an alias
    assert sum(bool(unseen[q]) for q in queries.index) / len(queries) > 0.6
    assert len(test_aliases & train_aliases) / len(test_aliases) > 0.9
    assert 150 <= len(train_aliases) <= 200  # 200 concepts, one alias each


def test_a_query_that_asks_for_an_intent_is_answered_only_by_documents_of_that_intent(tmp_path):
    """`n_intents`: documents carry their intent's marker words, queries name an intent by a word no document
    holds, and only documents of the asked intent are judged relevant to such a query."""
    import numpy as np

    from distill.data.sample import _build_world

    opts = SampleOptions(n_docs=600, n_train=60, n_test=20, n_topics=6, sessions_per_query=2, n_intents=3)
    generate(tmp_path, opts)
    world = _build_world(opts, np.random.default_rng(opts.seed))  # the generator's first draws
    corpus = pd.read_json(tmp_path / "corpus.jsonl", lines=True, dtype={"_id": str}).set_index("_id")
    words = {d: set(t.split()) for d, t in corpus.text.items()}
    intent_of = {}
    for d, ws in words.items():
        held = [i for i, marks in enumerate(world.intent_markers) if ws & set(marks)]
        assert len(held) == 1, f"{d} holds markers of intents {held}"
        intent_of[d] = held[0]
    assert not set().union(*words.values()) & set(world.intent_word)
    queries = pd.read_json(tmp_path / "queries.jsonl", lines=True, dtype={"_id": str}).set_index("_id")
    qrels = pd.concat(pd.read_csv(tmp_path / "qrels" / f"{s}.tsv", sep="\t") for s in ("train", "test"))
    asked = {
        q: [i for i, w in enumerate(world.intent_word) if w in t.split()] for q, t in queries.text.items()
    }
    with_intent = qrels[[len(asked[q]) == 1 for q in qrels["query-id"]]]
    assert with_intent["query-id"].nunique() >= 20  # about 60% of the 80 queries
    assert all(intent_of[d] == asked[q][0] for q, d in zip(with_intent["query-id"], with_intent["corpus-id"]))
    without = qrels[[not asked[q] for q in qrels["query-id"]]]
    assert (
        len({intent_of[d] for d in without["corpus-id"]}) == 3
    )  # other queries' relevant documents: any intent
