"""`make bench ARGS="--settings precision --workspace outputs/cranfield --data cranfield"`: which engine precision
keeps a workspace teacher's ranking on this machine: fp32, bf16 and int8 (calibrated on train pairs) scores of the
same test candidate pairs, each one's speed against fp32 (measured in one run), Spearman and mean per-query Kendall
tau against fp32, and test nDCG@10. One record per precision."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from distill.data.beir import Dataset
from distill.ir.metrics import evaluate, kendall_per_query
from distill.ir.timing import best_of
from distill.teacher.calibration import int8_teacher
from distill.teacher.engine import ScoringEngine
from distill.teacher.model import TeacherModel, load_teacher
from distill.teacher.schema import TeacherConfig


def teacher_in(model_dir: str, dtype: str, ds: Dataset, calib: pd.DataFrame, workdir: Path) -> TeacherModel:
    """The workspace teacher in `dtype` on the CPU; int8 calibrated on the `calib` pairs at the default bar."""
    m = load_teacher(model_dir, dtype=dtype, device="cpu")
    if m.dtype != "int8":
        return m
    bar = TeacherConfig()
    m, _ = int8_teacher(
        m,
        calib,
        ds.queries.loc[calib.qid, "text"].tolist(),
        ds.doc_texts(calib.docid),
        workdir,
        min_spearman=bar.min_spearman,
        min_kendall=bar.min_kendall,
    )
    return m


def compare(
    model_dir: str, ds: Dataset, cands: pd.DataFrame, calib: pd.DataFrame, workdir: Path, repeats: int = 2
) -> list[dict]:
    """The records of each precision on `cands` (int8 calibrated on the `calib` pairs, its graphs in `workdir`)."""
    queries, docs = ds.queries.loc[cands.qid, "text"].tolist(), ds.doc_texts(cands.docid)
    runs = {}
    for dtype in ("fp32", "bf16", "int8"):
        engine = ScoringEngine(teacher_in(model_dir, dtype, ds, calib, workdir / dtype))
        engine.score(queries[:64], docs[:64])  # warm-up

        def score(e: ScoringEngine = engine) -> np.ndarray:
            return np.asarray(e.score(queries, docs))

        best, scores = best_of(score, repeats)
        runs[dtype] = (scores, len(queries) / best)
    ref, ref_speed = runs["fp32"]
    qrels = ds.qrels.get("test")
    if qrels is not None:
        qrels = qrels[qrels.qid.isin(cands.qid)]  # the measured queries only
    out = []
    for dtype, (scores, speed) in runs.items():
        tau = kendall_per_query(cands, scores, ref)
        line = {
            "setting": "precision",
            "engine_dtype": dtype,
            "pairs": len(queries),
            "engine_pairs_per_s": round(speed, 1),
            "reference": "engine fp32",
            "reference_pairs_per_s": round(ref_speed, 1),
            "ratio": round(speed / ref_speed, 2),
            "spearman_vs_fp32": round(float(spearmanr(ref, scores)[0]), 5),
            "kendall_per_query_vs_fp32": None if tau is None else round(tau, 4),
            "fp32_score_std": round(float(ref.std()), 3),
        }
        if qrels is not None:
            run = cands.assign(score=scores)[["qid", "docid", "score"]]
            line["ndcg@10"] = round(evaluate(qrels, run)["ndcg@10"], 4)
        out.append(line)
    return out


def precision_setting(workspace: str, data: str, pairs: int) -> list[dict]:
    """The records of `--settings precision` for the workspace's trained teacher on about `pairs` test pairs."""
    from distill.data.prepare import load_dataset
    from distill.retrieval.candidates import checked_candidates
    from distill.schema import compose_config
    from distill.workspace import Workspace

    cfg = compose_config([f"data={data}", f"paths.workspace={workspace}", "logger=none"])
    ws = Workspace.from_cfg(cfg)
    ds = load_dataset(cfg)
    checked_candidates(cfg, ws, ds)
    every = pd.read_parquet(ws.candidates)
    cands = every[every.split == "test"]
    per_query = max(1, int(cands.groupby("qid").size().mean()))
    cands = cands[cands.qid.isin(cands.qid.unique()[: max(1, pairs // per_query)])].reset_index(drop=True)
    train = every[every.split == "train"]  # int8 calibrates on train pairs, as a job calibrates on its own
    wanted = TeacherConfig().calibration_pairs  # as many pairs as a job calibrates on
    calib = train[train.qid.isin(train.qid.unique()[: max(1, wanted // per_query)])].reset_index(drop=True)
    with tempfile.TemporaryDirectory() as tmp:
        return compare(str(ws.model("teacher")), ds, cands, calib, Path(tmp))
