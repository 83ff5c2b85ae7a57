"""Stacking GBDT students on other students' scores (`features.students`): leak-free by hold-out, cached with the
student's identity, evaluated under a name containing `stack`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf, open_dict

from distill.data.prepare import load_dataset
from distill.errors import DataError, StageNotReadyError
from distill.evaluation.stage import run as run_evaluate
from distill.students.base import FunctionScorer, write_student_json, write_trained_queries
from distill.students.examples import examples_for, stack_holdout
from distill.students.schema import BiEncoderConfig
from distill.students.stage import run as run_student
from distill.teacher.soft_labels import read_soft_labels
from distill.workspace import Workspace, staged_dir


# ------------------------------------------------- a planted student: it knows the labels of the queries it saw
def train(cfg):
    """`leak`: the queries it "trained" on (its scores there are the labels); `record`: what it says it saw."""
    ws = Workspace.from_cfg(cfg)
    with staged_dir(ws.model("planted")) as tmp:
        if cfg.student.record != "unrecorded":
            write_trained_queries(tmp, cfg.student.record)
        (tmp / "leak.json").write_text(json.dumps(list(cfg.student.leak)))
        (tmp / "salt.txt").write_text(str(cfg.student.salt))
        write_student_json(tmp, name="planted", loader=f"{__name__}:load", ws=ws, config=cfg.student)
    return {"student": "planted"}


def load(model_dir: Path, ctx):
    """The teacher's own score on the queries the student trained on (a perfect leak); noise elsewhere."""
    soft = read_soft_labels(ctx.ws.soft_labels, ctx.ws.candidates).set_index(["qid", "docid"]).score
    trained = set(json.loads((model_dir / "leak.json").read_text()))
    rng = np.random.default_rng(int((model_dir / "salt.txt").read_text()))

    def score(rows):
        keys = pd.MultiIndex.from_frame(rows[["qid", "docid"]])
        leak = rows.qid.isin(trained).to_numpy()
        return np.where(leak, soft.reindex(keys).to_numpy(), rng.normal(size=len(rows)))

    return [FunctionScorer("planted", score)]


def train_planted(cfg, leak, record=None, salt=0):
    with open_dict(cfg):
        cfg.student = OmegaConf.create(
            {
                "_target_": f"{__name__}.train",
                "name": "planted",
                "leak": leak,
                "record": leak if record is None else record,
                "salt": salt,
            }
        )
    return run_student(cfg)


def train_qids(cfg) -> list[str]:
    cands = pd.read_parquet(Workspace.from_cfg(cfg).candidates)
    return sorted(set(cands.qid[cands.split == "train"]))


def importance_share(ws: Workspace, name: str, feature: str) -> float:
    imp = pd.read_csv(ws.model(name) / "importance.csv", index_col="feature").gain
    return float(imp.get(feature, 0.0) / imp.sum())


def test_a_planted_leak_is_not_learnt_from_the_queries_the_student_saw(gbdt_ws):
    qids = train_qids(gbdt_ws())
    unseen = stack_holdout(qids, 0.4)
    assert 0 < len(unseen) < len(qids)
    ws = Workspace.from_cfg(gbdt_ws())

    # honest record: it saw every train query but the hold-out; the stack learns only on the hold-out (noise)
    train_planted(gbdt_ws(), sorted(set(qids) - unseen))
    info = run_student(gbdt_ws("student=lightgbm", "features.students=[planted]"))
    assert info["student"] == "lightgbm_stack" and info["stacked"] == ["planted"]
    assert info["train_queries"] + info["val_queries"] == len(unseen)
    honest = importance_share(ws, "lightgbm_stack", "student:planted")

    # the same leaky scores with no query recorded as seen: trained on every query, the GBDT leans on the leak
    train_planted(gbdt_ws(), sorted(set(qids) - unseen), record=[])
    run_student(gbdt_ws("student=lightgbm", "features.students=[planted]"))
    leaky = importance_share(ws, "lightgbm_stack", "student:planted")
    assert leaky > 0.5 > 0.2 > honest


def test_stacking_refuses_students_that_cannot_show_it_is_leak_free(gbdt_ws):
    train_planted(gbdt_ws(), [], record="unrecorded")
    with pytest.raises(StageNotReadyError, match="does not record the queries.*stack_holdout=0.3"):
        run_student(gbdt_ws("student=xgboost", "features.students=[planted]"))
    train_planted(gbdt_ws(), train_qids(gbdt_ws()))
    with pytest.raises(DataError, match="every train query was seen.*stack_holdout"):
        run_student(gbdt_ws("student=xgboost", "features.students=[planted]"))


def test_stacked_student_is_evaluated_cached_and_tied_to_its_students(gbdt_ws):
    qids = train_qids(gbdt_ws())
    train_planted(gbdt_ws(), sorted(set(qids) - stack_holdout(qids, 0.4)))
    run_student(gbdt_ws("student=xgboost", "features.students=[planted]"))
    ws = Workspace.from_cfg(gbdt_ws())
    cache = pd.read_parquet(ws.student_scores("planted"))
    assert len(cache) == len(pd.read_parquet(ws.candidates))  # every candidate, once
    metrics = run_evaluate(gbdt_ws("evaluate.latency_queries=2", "evaluate.load.duration_s=5"))
    assert 0 <= metrics["rankers"]["xgboost_stack"]["ndcg@10"] <= 1
    # the stacked student's inputs changed (another salt: other scores): the stack refuses to load
    train_planted(gbdt_ws(), sorted(set(qids) - stack_holdout(qids, 0.4)), salt=1)
    with pytest.raises(StageNotReadyError, match="stacked on another version of planted"):
        run_evaluate(gbdt_ws("evaluate.latency_queries=2", "evaluate.load.duration_s=5"))


def test_neural_students_leave_out_the_stack_hold_out(gbdt_ws):
    cfg = gbdt_ws()
    ws, ds = Workspace.from_cfg(cfg), load_dataset(cfg)
    opts = BiEncoderConfig(negatives=2, negative_margin=None, stack_holdout=0.4)
    ex, _, offered = examples_for(opts, ws, ds)
    held = stack_holdout(train_qids(cfg), 0.4)
    assert set(ex.qid).isdisjoint(held)
    # what the student records as seen: every train query it was offered, not only those that gave examples
    assert offered == set(train_qids(cfg)) - held and set(ex.qid) <= offered
    full, _, _ = examples_for(BiEncoderConfig(negatives=2, negative_margin=None), ws, ds)
    assert set(full.qid) & held  # without the hold-out those queries give examples
    # the same queries for every share-holder, whatever the order
    assert stack_holdout(train_qids(cfg)[::-1], 0.4) == held


def test_a_student_that_skipped_queries_still_counts_them_as_seen(gbdt_ws, tiny_model_dir):
    """A neural student offered every train query records them all, also those that gave it no example (no
    positive, too few negatives): a stack on it has no unseen query left and refuses, where it once trained on
    exactly the skipped queries."""
    cfg = gbdt_ws(
        "student=bi_encoder",
        f"student.base_model={tiny_model_dir}",
        "student.negatives=12",  # more than many queries' candidates below the positive give: skips
        "student.negative_margin=null",
        "student.samples_per_positive=1",
        "student.bm25_weight=null",
        "student.max_length=32",
    )
    info = run_student(cfg)
    assert info["skipped"]["no_positive"] + info["skipped"]["too_few_negatives"] > 0
    folder = Workspace.from_cfg(cfg).model("bi_encoder") / "kl"
    assert set(json.loads((folder / "trained_queries.json").read_text())) == set(train_qids(cfg))
    with pytest.raises(DataError, match="every train query was seen by a stacked student"):
        run_student(gbdt_ws("student=lightgbm", "features.students=[bi_encoder_kl]"))
