"""Compare the rankers present in a workspace on the test split (BM25, teacher, GBDT students).

For each ranker: nDCG@10, MRR@10, Recall@100, MAP (`distill.evaluation.metrics`) and, for the students, the
mean per-query Kendall tau against the teacher. Written to `metrics.json` as
`{"rankers": {"<name>": {"ndcg@10": .., "mrr@10": .., "recall@100": .., "map": .., "kendall_tau_vs_teacher": ..}}}`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from distill.data.beir import Dataset
from distill.evaluation.metrics import evaluate
from distill.teacher.soft_labels import read_soft_labels
from distill.workspace import Workspace, write_json_atomic


def gbdt_scores(model_dir: Path, feats: pd.DataFrame) -> np.ndarray:
    names = json.loads((model_dir / "features.json").read_text())
    X = feats[names].to_numpy(np.float32)
    if (model_dir / "model.txt").exists():
        import lightgbm as lgb

        return np.asarray(lgb.Booster(model_file=str(model_dir / "model.txt")).predict(X))
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(str(model_dir / "model.json"))
    return booster.predict(xgb.DMatrix(X))


def kendall_vs(run: pd.DataFrame, teacher: pd.DataFrame) -> float | None:
    """Mean per-query Kendall tau against the teacher; None when no query has two distinct scores on both sides."""
    m = run.merge(teacher[["qid", "docid", "score"]].rename(columns={"score": "t"}), on=["qid", "docid"])
    taus = [
        kendalltau(g.score, g.t)[0]
        for _, g in m.groupby("qid")
        if g.score.nunique() > 1 and g.t.nunique() > 1
    ]
    taus = [t for t in taus if np.isfinite(t)]
    return float(np.mean(taus)) if taus else None


def compare(ds: Dataset, ws: Workspace, split: str = "test") -> dict[str, Any]:
    cands = pd.read_parquet(ws.require(ws.candidates, "candidates"))
    cands = cands[cands.split == split]
    qrels = ds.qrels[split]
    runs: dict[str, pd.DataFrame] = {"bm25": cands[["qid", "docid"]].assign(score=cands.bm25.to_numpy())}
    teacher = None
    if (ws.soft_labels / "manifest.json").exists():
        teacher = cands[["qid", "docid"]].merge(read_soft_labels(ws.soft_labels), on=["qid", "docid"])
        runs["teacher"] = teacher[["qid", "docid", "score"]]
    if ws.features.exists():
        feats = pd.read_parquet(ws.features)
        feats = feats[feats.split == split]
        for name in ("lightgbm", "xgboost"):
            d = ws.model(name)
            if (d / "features.json").exists():
                runs[name] = feats[["qid", "docid"]].assign(score=gbdt_scores(d, feats))
    out: dict[str, Any] = {"split": split, "rankers": {}}
    for name, run in runs.items():
        m: dict[str, float | None] = {k: v for k, v in evaluate(qrels, run).items() if k != "queries"}
        if teacher is not None and name != "teacher":
            m["kendall_tau_vs_teacher"] = kendall_vs(run, teacher)
        out["rankers"][name] = m
    write_json_atomic(out, ws.metrics)
    return out


def table(metrics: dict[str, Any]) -> str:
    cols = ["ndcg@10", "mrr@10", "recall@100", "map", "kendall_tau_vs_teacher"]
    lines = [f"{'ranker':<10}" + "".join(f"{c:>24}" for c in cols)]
    for name, m in metrics["rankers"].items():
        lines.append(
            f"{name:<10}" + "".join(f"{m[c]:>24.4f}" if m.get(c) is not None else f"{'-':>24}" for c in cols)
        )
    return "\n".join(lines)
