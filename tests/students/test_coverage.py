"""The one coverage rule (distill/students/coverage.py): every student refuses soft labels that cover too few
train queries, in one line naming the share and the option, and trains on the covered queries otherwise."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from distill.errors import DataError
from distill.students.stage import run as run_student
from distill.teacher.importers import import_soft_labels
from distill.teacher.soft_labels import read_soft_labels
from distill.workspace import Workspace

NEURAL = [
    "student=bi_encoder",
    "student.negatives=2",
    "student.negative_margin=null",
    "student.embedding_dim=8",
]


def keep_labels_of(cfg, n_queries: int) -> set[str]:
    """Replace the workspace's soft labels by those of its first `n_queries` train queries."""
    ws = Workspace.from_cfg(cfg)
    soft = read_soft_labels(ws.soft_labels, ws.candidates)
    cands = pd.read_parquet(ws.candidates)
    keep = sorted(set(cands.qid[cands.split == "train"]))[:n_queries]
    part = ws.root / "subset.parquet"
    soft[soft.qid.isin(keep)].to_parquet(part)
    shutil.rmtree(ws.soft_labels)
    import_soft_labels("parquet", part, ws.root)
    return set(keep)


@pytest.mark.parametrize("student", [NEURAL, ["student=lightgbm"]], ids=["neural", "gbdt"])
def test_labels_for_a_few_queries_are_refused_in_one_line(gbdt_ws, student):
    cfg = gbdt_ws(*student)
    keep_labels_of(cfg, 6)
    with pytest.raises(
        DataError, match=r"soft labels cover 6 of the \d+ train queries \(\d+\.\d%.*min_label_coverage=0.95"
    ):
        run_student(cfg)


def test_a_lower_threshold_trains_on_the_covered_queries_only(gbdt_ws):
    cfg = gbdt_ws("student=lightgbm", "student.min_label_coverage=0.1")
    kept = keep_labels_of(cfg, 10)
    info = run_student(cfg)
    assert info["train_queries"] + info["val_queries"] == len(kept)
