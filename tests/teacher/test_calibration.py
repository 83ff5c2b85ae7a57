"""A precision that checks itself (distill/teacher/calibration.py): a sample of the job's own pairs in fp32 and in
the chosen precision; `auto` keeps the faster one only when the ranking holds, an explicit one warns."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from distill.data.prepare import load_dataset
from distill.retrieval.candidates import run as run_candidates
from distill.teacher.calibration import calibration_sample, check_precision, ranking_agreement
from distill.teacher.model import load_teacher
from distill.teacher.scoring import run as run_score
from distill.workspace import Workspace
from tests.teacher import tiny_models


def flat_teacher(dest, init: float):
    """A tiny BERT reranker whose scores spread about as much as `init` lets them."""
    import transformers as tf

    tok = tiny_models.wordpiece_tokenizer(token_types=True)
    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=1, initializer_range=init)  # fmt: skip
    tf.BertForSequenceClassification(cfg).save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest


def test_agreement_figures_against_references():
    sample = pd.DataFrame({"qid": ["a"] * 4 + ["b"] * 3, "docid": list("1234567")})
    ref = np.array([4.0, 3.0, 2.0, 1.0, 3.0, 2.0, 1.0])
    got = np.array([4.0, 3.0, 1.0, 2.0, 3.0, 2.0, 1.0])  # one swap in query a
    from scipy.stats import kendalltau, spearmanr

    out = ranking_agreement(sample, ref, got)
    assert out["spearman"] == pytest.approx(spearmanr(ref, got)[0])
    assert out["kendall_per_query"] == pytest.approx((kendalltau(ref[:4], got[:4])[0] + 1.0) / 2)


def test_a_precision_that_breaks_the_ranking_falls_back_under_auto_and_warns_when_asked(
    tiny_sample_cfg, tmp_path, caplog
):
    cfg = tiny_sample_cfg("retrieval.k=20")
    run_candidates(cfg)
    ws, ds = Workspace.from_cfg(cfg), load_dataset(cfg)
    sample = calibration_sample(ws.candidates, 200)
    assert 150 <= len(sample) <= 260 and sample.qid.nunique() >= 8  # whole queries, spread over the file
    folder = flat_teacher(tmp_path / "flat", init=0.002)
    bf16 = load_teacher(str(folder), dtype="bf16", device="cpu")
    t = cfg.teacher

    def load_fp32(name):
        return load_teacher(name, dtype="fp32", device="cpu")

    (chosen,), facts = check_precision([bf16], ds, sample, t, load_fp32, "auto")
    f = facts[str(folder)]
    assert chosen.dtype == "fp32" and not f["passed"] and f["scored_in"] == "fp32"
    assert (f["spearman"] is None or f["spearman"] < 0.999) and f["pairs"] == len(sample)
    (chosen,), facts = check_precision([bf16], ds, sample, t, load_fp32, "bf16")
    assert chosen.dtype == "bf16" and facts[str(folder)]["scored_in"] == "bf16"
    assert "below the bar; scoring in bf16 as asked" in caplog.text


def test_the_job_records_its_calibration(tiny_sample_cfg, tiny_model_dir):
    cfg = tiny_sample_cfg(
        "retrieval.k=10",
        f"teacher.model={tiny_model_dir}",
        "teacher.max_length=64",
        "teacher.dtype=bf16",
        "teacher.calibration_pairs=60",
        "teacher.min_spearman=0.5",
        "teacher.min_kendall=0.5",
    )
    run_candidates(cfg)
    run_score(cfg)
    manifest = json.loads((Workspace.from_cfg(cfg).soft_labels / "manifest.json").read_text())
    cal = manifest["calibration"][str(tiny_model_dir)]
    assert cal["dtype"] == "bf16" and cal["passed"] and cal["scored_in"] == "bf16" and cal["pairs"] >= 40
    assert manifest["identity"]["dtype"] == "bf16"
