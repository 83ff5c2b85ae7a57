"""`make bench --settings precision` (distill/bench/precision.py): every figure of a record recomputed from an
independent reference (the engine's own scores in that precision, scipy's Spearman, the evaluation's per-query
Kendall, the metrics function), so a record cannot report a number the scores do not give."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from distill.bench.precision import compare, teacher_in
from distill.data.prepare import load_dataset
from distill.evaluation.stage import kendall_per_query
from distill.ir.metrics import evaluate
from distill.teacher.engine import ScoringEngine
from distill.workspace import Workspace


def test_each_precisions_figures_match_its_scores(gbdt_ws, tiny_model_dir, tmp_path):
    cfg = gbdt_ws()
    ws, ds = Workspace.from_cfg(cfg), load_dataset(cfg)
    cands = pd.read_parquet(ws.candidates)
    cands = cands[cands.qid.isin(cands[cands.split == "test"].qid.unique()[:3])].reset_index(drop=True)
    every = pd.read_parquet(ws.candidates)
    calib = every[every.qid.isin(every[every.split == "train"].qid.unique()[:4])].reset_index(drop=True)
    by = {
        r["engine_dtype"]: r
        for r in compare(str(tiny_model_dir), ds, cands, calib, tmp_path / "records", repeats=1)
    }
    assert set(by) == {"fp32", "bf16", "int8"} and all(r["pairs"] == len(cands) for r in by.values())
    queries, docs = ds.queries.loc[cands.qid, "text"].tolist(), ds.doc_texts(cands.docid)

    def scores(dtype: str) -> np.ndarray:
        teacher = teacher_in(str(tiny_model_dir), dtype, ds, calib, tmp_path / "again" / dtype)
        return np.asarray(ScoringEngine(teacher).score(queries, docs))

    ref = scores("fp32")
    qrels = ds.qrels["test"][ds.qrels["test"].qid.isin(cands.qid)]
    for dtype in ("bf16", "int8"):
        got = scores(dtype)  # deterministic on CPU: the record's scores are these
        r = by[dtype]
        assert r["spearman_vs_fp32"] == pytest.approx(round(float(spearmanr(ref, got)[0]), 5))
        assert r["kendall_per_query_vs_fp32"] == pytest.approx(round(kendall_per_query(cands, got, ref), 4))
        assert r["ndcg@10"] == pytest.approx(
            round(evaluate(qrels, cands[["qid", "docid"]].assign(score=got))["ndcg@10"], 4)
        )
        assert r["ratio"] == pytest.approx(
            round(r["engine_pairs_per_s"] / r["reference_pairs_per_s"], 2), abs=0.011
        )
    assert by["fp32"]["fp32_score_std"] == pytest.approx(round(float(ref.std()), 3))
