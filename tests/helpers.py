"""Helpers several test modules share (fixtures are in conftest.py): tiny settings, reference scorers, the
crash-and-resume harness. A test module imports from here, never from another test module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from distill.config import PROJECT_ROOT
from distill.retrieval.candidates import run as run_candidates
from distill.teacher.scoring import run as run_score
from distill.teacher.soft_labels import read_soft_labels
from distill.teacher.train import run as run_train
from tests.conftest import TINY_SAMPLE

# a from-scratch teacher small enough for tests
TINY_TRAIN = [
    "teacher.train.vocab_size=300",
    "teacher.train.hidden_size=32",
    "teacher.train.num_layers=1",
    "teacher.train.init=match",
    "teacher.train.num_heads=2",
    "teacher.train.intermediate_size=64",
    "teacher.train.epochs=1",
    "teacher.train.max_length=48",
    "teacher.train.negatives=3",
    "teacher.max_length=48",
    "teacher.batch_tokens=1024",
    "retrieval.k=10",
]

TINY_TEACHER = [
    "teacher.train.vocab_size=300",
    "teacher.train.hidden_size=32",
    "teacher.train.num_layers=1",
    "teacher.train.init=match",
    "teacher.train.intermediate_size=64",
    "teacher.train.epochs=1",
    "teacher.train.max_length=48",
    "teacher.train.negatives=3",
    "teacher.max_length=48",
    "retrieval.k=20",
]


def scored_by_tiny_teacher(tiny_sample_cfg) -> None:
    """Candidates, a tiny teacher trained on them, and its soft labels, in the tiny sample's workspace."""
    cfg = tiny_sample_cfg(*TINY_TEACHER)
    run_candidates(cfg)
    run_train(cfg)
    run_score(cfg)


def reference_scores(model_dir, queries, docs, max_length=64):
    """Plain transformers, one pair at a time: the ground truth the engine must reproduce."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for q, d in zip(queries, docs, strict=True):
            enc = tok(q, d, truncation=True, max_length=max_length, return_tensors="pt")
            logits = model(**enc).logits[0]
            out.append(float(logits[0]) if len(logits) == 1 else float(logits[1] - logits[0]))
    return np.array(out, dtype=np.float32)


# ------------------------------------------------------------------- crash and resume (teacher scoring)
def crash_setup(tmp_path, make_cfg, model_dir):
    """A reference (uninterrupted) run, and the command and workspace of a run to crash."""
    overrides = [
        f"data.path={tmp_path / 'sample'}",
        *TINY_SAMPLE,
        "retrieval.k=15",
        f"teacher.model={model_dir}",
        "teacher.max_length=64",
        "teacher.shard_size=60",
        "teacher.batch_tokens=512",
        "teacher.dtype=fp32",
        "logger=none",
        f"paths.output_root={tmp_path / 'outputs'}",
        f"paths.data_root={tmp_path / 'data'}",
    ]
    ref_cfg = make_cfg(*overrides, "paths.workspace=" + str(tmp_path / "ref"))
    run_candidates(ref_cfg)
    run_score(ref_cfg)
    reference = read_soft_labels(tmp_path / "ref" / "soft_labels")
    crash = tmp_path / "crash"
    crash.mkdir()
    (crash / "candidates.parquet").write_bytes((tmp_path / "ref" / "candidates.parquet").read_bytes())
    cmd = [
        sys.executable,
        str(PROJECT_ROOT / "scripts" / "teacher_score.py"),
        *overrides,
        f"paths.workspace={crash}",
    ]
    return reference, crash, cmd


def check_resumed(tmp_path, reference, crash, cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    resumed = read_soft_labels(crash / "soft_labels")
    assert not resumed.duplicated(["qid", "docid"]).any()
    assert (resumed.qid.to_numpy() == reference.qid.to_numpy()).all()
    assert (resumed.docid.to_numpy() == reference.docid.to_numpy()).all()
    np.testing.assert_allclose(resumed.score, reference.score, atol=1e-6)
    assert not list((crash / "soft_labels").glob("*.tmp"))
    parts = sorted((crash / "soft_labels").glob("part-*.parquet"))
    assert sum(len(pd.read_parquet(p)) for p in parts) == len(reference)
    assert len(parts) == len(list(Path(tmp_path / "ref" / "soft_labels").glob("part-*.parquet")))
    return proc
