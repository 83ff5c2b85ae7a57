"""`teacher.dtype=int8` (distill/teacher/int8.py): static int8 through OpenVINO, calibrated on the job's own pairs
and judged by their ranking; `auto` tries it on CPUs without native bf16 and falls back when it does not hold."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

import distill.teacher.model as model_module
from distill.errors import ConfigError
from distill.retrieval.candidates import run as run_candidates
from distill.teacher import int8
from distill.teacher.calibration import int8_teacher, ranking_bar
from distill.teacher.engine import ScoringEngine
from distill.teacher.model import load_teacher
from distill.teacher.scoring import run as run_score
from distill.teacher.soft_labels import read_soft_labels
from distill.workspace import Workspace
from tests.teacher import tiny_models
from tests.teacher.test_calibration import flat_teacher

pytest.importorskip("openvino")
pytest.importorskip("nncf")

WORDS = [
    "cat",
    "dog",
    "fox",
    "mat",
    "the",
    "quick",
    "brown",
    "jumps",
    "on",
    "a",
    "markets",
    "sat",
    "lazy",
    "over",
]


def pairs(
    n_queries: int = 12, per_query: int = 6, seed: int = 0
) -> tuple[pd.DataFrame, list[str], list[str]]:
    rng = np.random.default_rng(seed)
    qs, ds, qids = [], [], []
    for q in range(n_queries):
        query = " ".join(rng.choice(WORDS, 3))
        for _ in range(per_query):
            qs.append(query)
            ds.append(" ".join(rng.choice(WORDS, int(rng.integers(4, 30)))))
            qids.append(q)
    return pd.DataFrame({"qid": qids}), qs, ds


def test_int8_is_calibrated_on_the_pairs_and_ranks_them_as_fp32_does(tiny_model_dir, tmp_path):
    sample, qs, ds = pairs()
    teacher = load_teacher(str(tiny_model_dir), dtype="int8", device="cpu")
    ref = ScoringEngine(int8.detach(teacher)).score(qs, ds)
    got_teacher, facts = int8_teacher(
        teacher, sample, qs, ds, tmp_path, min_spearman=0.99, min_kendall=0.9, batch_tokens=256
    )
    assert got_teacher.dtype == "int8" and got_teacher.graph is not None
    assert (
        facts["passed"]
        and facts["calibration_batches"] > 1
        and 0 <= facts["kept_f32"] < facts["weight_products"]
    )
    got = ScoringEngine(got_teacher).score(qs, ds)
    assert not np.array_equal(got, ref)  # the graph scored, not PyTorch
    assert spearmanr(ref, got)[0] == pytest.approx(facts["agreement"]["spearman"], abs=1e-6)
    assert facts["agreement"]["spearman"] >= 0.99
    # the recorded step is the one kept, and every step tried is recorded
    assert facts["tried"][-1]["kept_f32"] == facts["kept_f32"]
    # fp32 comes back as it was: tracing must not leave the model in training mode (dropout on)
    again = ScoringEngine(int8.detach(got_teacher)).score(qs, ds)
    np.testing.assert_array_equal(again, ref)


def test_a_bar_no_layout_reaches_is_reported_not_passed(tiny_model_dir, tmp_path):
    sample, qs, ds = pairs(seed=1)
    teacher = load_teacher(str(tiny_model_dir), dtype="int8", device="cpu")
    agree = ranking_bar(sample, 1.01, 1.01)  # unreachable
    _, facts = int8.calibrate(teacher, qs, ds, agree=agree, workdir=tmp_path)
    assert not facts["passed"]
    # the search stops at 3/4 of the products kept f32: beyond it int8 would not pay
    assert facts["kept_f32"] <= 0.75 * facts["weight_products"] and len(facts["tried"]) >= 4


def test_int8_scores_nothing_before_calibration_and_refuses_causal_lms(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="calibrated on a scoring job's own pairs before it scores"):
        ScoringEngine(load_teacher(str(tiny_model_dir), dtype="int8", device="cpu"))
    folder = tiny_models.build("qwen3", tmp_path / "qwen3")
    with pytest.raises(ConfigError, match="static int8 for encoder cross-encoders"):
        load_teacher(str(folder), dtype="int8", device="cpu")


def test_auto_on_a_causal_lm_without_native_bf16_is_fp32(tmp_path, monkeypatch):
    monkeypatch.setattr(model_module, "cpu_has_native_bf16", lambda: False)
    folder = tiny_models.build("qwen3", tmp_path / "qwen3")
    assert load_teacher(str(folder), dtype="auto", device="cpu").dtype == "fp32"


def test_int8_needs_calibration_pairs(tiny_sample_cfg):
    from distill.config import validate

    with pytest.raises(ConfigError, match="teacher.calibration_pairs.*teacher.dtype=int8 is calibrated"):
        validate(tiny_sample_cfg("teacher.dtype=int8", "teacher.calibration_pairs=0"))


def test_the_int8_job_records_its_calibration_and_keeps_fp32s_ranking(tiny_sample_cfg, tiny_model_dir):
    common = ("retrieval.k=10", f"teacher.model={tiny_model_dir}", "teacher.max_length=64")
    fp32 = tiny_sample_cfg(*common)
    run_candidates(fp32)
    run_score(fp32)
    ws = Workspace.from_cfg(fp32)
    ref = read_soft_labels(ws.soft_labels, ws.candidates)
    cfg = tiny_sample_cfg(
        *common,
        "teacher.dtype=int8",
        "teacher.calibration_pairs=80",
        "teacher.min_spearman=0.99",
        "teacher.min_kendall=0.9",
        "teacher.overwrite=true",
    )
    run_score(cfg)
    manifest = json.loads((ws.soft_labels / "manifest.json").read_text())
    cal = manifest["calibration"][str(tiny_model_dir)]
    assert manifest["identity"]["dtype"] == "int8" and cal["scored_in"] == "int8" and cal["passed"]
    assert cal["int8"]["backend"] == "openvino" and cal["pairs"] >= 40
    got = read_soft_labels(ws.soft_labels, ws.candidates)
    both = ref.merge(got, on=["qid", "docid"], suffixes=("_fp32", "_int8"))
    assert len(both) == len(ref) == len(got)
    assert spearmanr(both.score_fp32, both.score_int8)[0] >= 0.99
    assert not (ws.root / ".teacher-int8").exists() and not list(ws.root.glob(".teacher-int8-*"))


def test_auto_without_native_bf16_falls_back_when_int8_loses_the_ranking(
    tiny_sample_cfg, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(model_module, "cpu_has_native_bf16", lambda: False)
    folder = flat_teacher(tmp_path / "flat", init=0.002)  # scores spread too little for int8
    cfg = tiny_sample_cfg("retrieval.k=10", f"teacher.model={folder}", "teacher.dtype=auto",
                          "teacher.calibration_pairs=60")  # fmt: skip
    run_candidates(cfg)
    run_score(cfg)
    ws = Workspace.from_cfg(cfg)
    manifest = json.loads((ws.soft_labels / "manifest.json").read_text())
    cal = manifest["calibration"][str(folder)]
    assert cal["dtype"] == "int8" and not cal["passed"] and cal["scored_in"] == "fp32"
    assert manifest["identity"]["dtype"] == "fp32"
    assert "teacher.dtype=auto (int8)" in capsys.readouterr().out


def test_only_the_scoring_job_lets_auto_choose_int8(tiny_sample_cfg, tiny_model_dir, monkeypatch):
    """On a CPU without native bf16 `auto` means int8 only where it is calibrated (the scoring job); elsewhere
    (evaluation's latency probe, the server, the cross-encoder student's scorer) it is fp32, which scores."""
    from distill.teacher.scoring import load_configured_teacher, load_teachers

    monkeypatch.setattr(model_module, "cpu_has_native_bf16", lambda: False)
    cfg = tiny_sample_cfg(f"teacher.model={tiny_model_dir}", "teacher.dtype=auto")
    ws = Workspace.from_cfg(cfg)
    assert [m.dtype for m in load_teachers(cfg, ws, "cpu")] == ["int8"]
    other = load_configured_teacher(cfg, str(tiny_model_dir), "cpu")
    assert other.dtype == "fp32" and len(ScoringEngine(other).score(["cat"], ["a cat"])) == 1
    assert load_teacher(str(tiny_model_dir), dtype="auto", device="cpu").dtype == "fp32"
    no_check = tiny_sample_cfg(
        f"teacher.model={tiny_model_dir}", "teacher.dtype=auto", "teacher.calibration_pairs=0"
    )
    assert [m.dtype for m in load_teachers(no_check, ws, "cpu")] == ["fp32"]
