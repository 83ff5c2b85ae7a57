"""The student contract: a student defined by one module and its config (`_target_`) alone is trained by `make
train-student` and found, loaded and scored by `make evaluate`, which names no student."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf, open_dict

from distill.evaluation.stage import run as run_evaluate
from distill.retrieval.candidates import run as run_candidates
from distill.students.base import (
    STUDENT_FILE,
    Context,
    FunctionScorer,
    load_scorers,
    student_dirs,
    write_student_json,
)
from distill.students.stage import run as run_student
from distill.teacher.scoring import run as run_score
from distill.workspace import Workspace, staged_dir


# ------------------------------------------------------------------ a student in a dozen lines: w x BM25
def train(cfg):
    ws = Workspace.from_cfg(cfg)
    with staged_dir(ws.model("scaled_bm25")) as tmp:
        (tmp / "weights.json").write_text(json.dumps({"w": float(cfg.student.w)}))
        write_student_json(tmp, name="scaled_bm25", loader=f"{__name__}:load", ws=ws, config=cfg.student)
    return {"student": "scaled_bm25"}


def load(model_dir: Path, ctx: Context):
    w = json.loads((model_dir / "weights.json").read_text())["w"]
    return [FunctionScorer("scaled_bm25", lambda rows: w * rows.bm25.to_numpy(np.float64))]


@pytest.fixture
def ws_cfg(tiny_sample_cfg, tiny_model_dir):
    cfg = tiny_sample_cfg(
        "retrieval.k=10",
        f"teacher.model={tiny_model_dir}",
        "teacher.max_length=64",
        "evaluate.latency_queries=3",
        "evaluate.load.duration_s=5",
    )
    run_candidates(cfg)
    run_score(cfg)
    with open_dict(cfg):
        cfg.student = OmegaConf.create({"_target_": f"{__name__}.train", "name": "scaled_bm25", "w": 2.0})
    return cfg


def test_a_student_registered_by_its_config_alone_is_trained_and_evaluated(ws_cfg):
    assert run_student(ws_cfg) == {"student": "scaled_bm25"}
    ws = Workspace.from_cfg(ws_cfg)
    assert student_dirs(ws) == [ws.model("scaled_bm25")]
    meta = json.loads((ws.model("scaled_bm25") / STUDENT_FILE).read_text())
    assert meta["loader"] == f"{__name__}:load" and set(meta["inputs"]) == {"candidates", "soft_labels"}
    assert meta["config"] == {"_target_": f"{__name__}.train", "name": "scaled_bm25", "w": 2.0}
    metrics = run_evaluate(ws_cfg)
    got = metrics["rankers"]["scaled_bm25"]
    # 2 x BM25 ranks exactly as BM25 does
    assert got["ndcg@10"] == metrics["rankers"]["bm25"]["ndcg@10"] and got["ms_per_query"] > 0


def test_scorers_score_one_query_or_many(ws_cfg):
    run_student(ws_cfg)
    ws = Workspace.from_cfg(ws_cfg)
    cands = pd.read_parquet(ws.candidates)
    (scorer,) = load_scorers(ws.model("scaled_bm25"), Context(None, ws, cands, packages=("tests",)))  # type: ignore[arg-type]
    one = cands[cands.qid == cands.qid.iloc[0]]
    np.testing.assert_allclose(scorer.score(one), 2 * one.bm25.to_numpy())
    np.testing.assert_allclose(scorer.score(cands), 2 * cands.bm25.to_numpy())


def test_a_config_without_target_is_one_line(ws_cfg):
    from distill.errors import ConfigError

    with open_dict(ws_cfg):
        ws_cfg.student = OmegaConf.create({"name": "mystery"})
    with pytest.raises(ConfigError, match=r"student has no _target_: choose a student with student=NAME"):
        run_student(ws_cfg)


def test_a_student_json_cannot_choose_the_code_that_runs(ws_cfg, tmp_path):
    """A folder whose student.json named `shutil:rmtree` as its loader once deleted a folder at evaluation: only
    the `load` of a registered student (or of a package in student_packages) is ever run."""
    from distill.errors import ConfigError

    run_student(ws_cfg)
    ws = Workspace.from_cfg(ws_cfg)
    folder = ws.model("scaled_bm25")
    meta = json.loads((folder / STUDENT_FILE).read_text())
    cands = pd.read_parquet(ws.candidates)
    from distill.workspace import COMPLETE

    for loader in ("shutil:rmtree", "os:remove", f"{__name__}:train", "tests.students.test_contract:load"):
        (folder / STUDENT_FILE).write_text(json.dumps(meta | {"loader": loader}))
        marker = json.loads((folder / COMPLETE).read_text())
        marker["files"][STUDENT_FILE] = (folder / STUDENT_FILE).stat().st_size
        (folder / COMPLETE).write_text(json.dumps(marker))
        ctx = Context(None, ws, cands, packages=() if loader.endswith(":load") else ("tests",))  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="is not the load function of a registered student"):
            load_scorers(folder, ctx)
        assert folder.is_dir() and (folder / "weights.json").is_file()
