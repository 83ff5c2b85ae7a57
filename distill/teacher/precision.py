"""Which engine precision keeps the teacher's ranking on this machine: fp32, bf16 and int8 scores of the same
candidate pairs of a workspace's trained teacher, with each one's speed against fp32 (measured in one run), Spearman
and mean per-query Kendall tau against fp32, and test nDCG@10. One JSON line per precision:

    python -m distill.teacher.precision --workspace outputs/cranfield --data cranfield --pairs 1000
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
import torch
from scipy.stats import kendalltau, spearmanr

from distill.data.beir import Dataset
from distill.ir.metrics import evaluate
from distill.teacher.engine import ScoringEngine
from distill.teacher.model import load_teacher


def compare(model_dir: str, ds: Dataset, cands: pd.DataFrame, repeats: int = 2) -> list[dict]:
    queries, docs = ds.queries.loc[cands.qid, "text"].tolist(), ds.doc_texts(cands.docid)
    runs = {}
    for dtype in ("fp32", "bf16", "int8"):
        engine = ScoringEngine(load_teacher(model_dir, dtype=dtype, device="cpu"))
        engine.score(queries[:64], docs[:64])  # warm-up
        best, scores = np.inf, np.empty(0, dtype=np.float32)
        for _ in range(repeats):
            t0 = time.perf_counter()
            scores = engine.score(queries, docs)
            best = min(best, time.perf_counter() - t0)
        runs[dtype] = (scores, len(queries) / best)
    ref, ref_speed = runs["fp32"]
    groups = [(cands.qid == q).to_numpy() for q in cands.qid.unique()]
    qrels = ds.qrels.get("test")
    if qrels is not None:
        qrels = qrels[qrels.qid.isin(cands.qid)]  # the measured queries only
    out = []
    for dtype, (scores, speed) in runs.items():
        taus = [kendalltau(ref[g], scores[g])[0] for g in groups]
        line = {
            "dtype": dtype,
            "pairs": len(queries),
            "pairs_per_s": round(speed, 1),
            "vs_fp32": round(speed / ref_speed, 2),
            "spearman_vs_fp32": round(float(spearmanr(ref, scores)[0]), 5),
            "kendall_per_query_vs_fp32": round(float(np.nanmean(taus)), 4),
            "fp32_score_std": round(float(ref.std()), 3),
        }
        if qrels is not None:
            run = cands.assign(score=scores)[["qid", "docid", "score"]]
            line["ndcg@10"] = round(evaluate(qrels, run)["ndcg@10"], 4)
        out.append(line)
    return out


def main() -> None:
    from hydra import compose, initialize_config_dir

    from distill.config import CONFIG_DIR
    from distill.data.prepare import load_dataset
    from distill.workspace import Workspace

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--data", default="sample")
    ap.add_argument(
        "--pairs", type=int, default=1000, help="about this many test-split pairs (whole queries)"
    )
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "config", overrides=[f"data={args.data}", f"paths.workspace={args.workspace}", "logger=none"]
        )
    ws = Workspace.from_cfg(cfg)
    ds = load_dataset(cfg)
    cands = pd.read_parquet(ws.require(ws.candidates, "candidates"))
    cands = cands[cands.split == "test"]
    per_query = max(1, int(cands.groupby("qid").size().mean()))
    cands = cands[cands.qid.isin(cands.qid.unique()[: max(1, args.pairs // per_query)])]
    for line in compare(str(ws.model("teacher")), ds, cands):
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
