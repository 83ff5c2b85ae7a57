"""The seam between candidates.parquet and the dataset: every stage that reads the candidates with the dataset
checks that they were made from it (candidates.record.json's fingerprint of the dataset folder) and that each
query is listed in the split the dataset judges it in now, and refuses with one line otherwise."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from distill.config import load_callable
from distill.data.prepare import load_dataset
from distill.errors import DistillError
from distill.retrieval.candidates import run as run_candidates
from tests.conftest import write_jsonl


def _beir(root, n_queries=12):
    """A BEIR folder judged on test only (the stages split it by a hash of the query id)."""
    docs = [{"_id": f"d{i}", "title": "", "text": f"doc {i} cats and dogs number {i % 5}"} for i in range(30)]
    write_jsonl(root / "corpus.jsonl", docs)
    write_jsonl(
        root / "queries.jsonl", [{"_id": f"q{i}", "text": f"cats number {i % 5}"} for i in range(n_queries)]
    )
    (root / "qrels").mkdir()
    lines = "".join(f"q{i}\td{i}\t1\n" for i in range(n_queries))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + lines)
    return root


@pytest.fixture
def beir_cfg(make_cfg, tmp_path):
    root = _beir(tmp_path / "tiny")
    return root, lambda *o: make_cfg("data=beir", f"data.path={root}", "data.name=tiny", "retrieval.k=5", *o)


# each stage's entry (imported when its case runs) and the overrides it runs with
STAGES = {
    "features": ("distill.features.build:run", []),
    "teacher-score": ("distill.teacher.scoring:run", []),
    "train-teacher": ("distill.teacher.train:run", []),
    "train-student (bi-encoder)": ("distill.students.stage:run", ["student=bi_encoder"]),
    "train-student (lightgbm, learning from qrels)": (
        "distill.students.stage:run",
        ["student.labels.alpha=0.5"],
    ),
    "evaluate": ("distill.evaluation.stage:run", []),
    "serve": ("distill.serving.service:CascadeService", []),
}


def _features(cfg):
    return load_callable(STAGES["features"][0], "features")(cfg)


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_stage_refuses_candidates_made_from_another_dataset(beir_cfg, stage):
    root, cfg = beir_cfg
    run_candidates(cfg())
    corpus = root / "corpus.jsonl"  # the same ids, another text: every id the candidates name still exists
    corpus.write_text(corpus.read_text().replace("doc 3 cats", "doc 3 birds"))
    entry, overrides = STAGES[stage]
    fn = load_callable(entry, stage)
    with pytest.raises(
        DistillError,
        match=r"candidates.parquet was made from another dataset than .*tiny holds now .*re-run `make candidates`",
    ):
        fn(cfg(*overrides))


def test_a_stage_refuses_candidates_whose_queries_moved_split(beir_cfg):
    """data.split_seed changed since `make candidates`: the dataset's files are the same, its split is not."""
    _, cfg = beir_cfg
    before, after = load_dataset(cfg("data.split_seed=0")), load_dataset(cfg("data.split_seed=1"))
    assert set(before.qrels["test"].qid) != set(after.qrels["test"].qid)  # the precondition of the test
    run_candidates(cfg("data.split_seed=0"))
    with pytest.raises(
        DistillError,
        match=r"candidates.parquet: \d+ of 12 queries are listed in a split the dataset does not judge them in now "
        r"\(first: query 'q\d+' in 't\w+', judged in 't\w+'\).*data.split_seed.*re-run `make candidates`",
    ):
        _features(cfg("data.split_seed=1"))


def test_candidates_written_elsewhere_are_checked_by_content(beir_cfg):
    """No candidates.record.json (written by another tool): the queries and splits are still checked; candidates
    that agree with the dataset are used."""
    _, cfg = beir_cfg
    c = cfg()
    run_candidates(c)
    ws = __import__("pathlib").Path(c.paths.workspace)
    (ws / "candidates.record.json").unlink()
    assert _features(c)["rows"] > 0
    cands = pd.read_parquet(ws / "candidates.parquet")
    cands.loc[cands.qid == cands.qid.iloc[0], "qid"] = "q99"
    cands.to_parquet(ws / "candidates.parquet", index=False)
    with pytest.raises(
        DistillError, match=r"\(first: query 'q99' in '\w+', which the dataset does not judge\)"
    ):
        _features(c)


def test_an_unreadable_candidates_record_is_one_line(beir_cfg):
    _, cfg = beir_cfg
    c = cfg()
    run_candidates(c)
    record = __import__("pathlib").Path(c.paths.workspace) / "candidates.record.json"
    record.write_text(json.dumps({"inputs": "nothing"}))
    with pytest.raises(DistillError, match=r"candidates.record.json does not say which dataset .* re-run"):
        _features(c)
