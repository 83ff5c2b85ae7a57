"""`make candidates`: BM25 top-k per query of each split -> candidates.parquet (qid, docid, rank, bm25, split)."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from distill.data.beir import Dataset
from distill.data.prepare import dataset_dir, load_dataset
from distill.errors import DataError
from distill.ir import fingerprint
from distill.ir.bm25 import BM25Index
from distill.ir.metrics import evaluate
from distill.stamps import Stage, data_config
from distill.tracking import start_run
from distill.workspace import Workspace, write_json_atomic, write_parquet_atomic

log = logging.getLogger(__name__)


def build_index(ds: Dataset, rc: Any) -> BM25Index:
    return BM25Index(
        ds.doc_texts(ds.corpus.index, rc.fields),
        k1=rc.k1,
        b=rc.b,
        method=rc.method,
        stemmer=rc.stemmer,
        stopwords=rc.stopwords,
        lowercase=rc.lowercase,
    )


def queries_per_split(ds: Dataset, splits: list[str]) -> dict[str, list[str]]:
    """qids per split; a query judged in two splits is an error (it would leak test labels into training)."""
    out = {s: ds.split_qids(s) for s in splits}
    seen: dict[str, str] = {}
    for s, qids in out.items():
        for q in qids:
            if q in seen:
                raise DataError(
                    f"query {q!r} is judged in both qrels/{seen[q]}.tsv and qrels/{s}.tsv; "
                    f"a query must belong to one split"
                )
            seen[q] = s
    return out


def build_candidates(ds: Dataset, index: BM25Index, splits: dict[str, list[str]], k: int) -> pd.DataFrame:
    docids = ds.corpus.index.to_numpy()
    frames = []
    for split, qids in splits.items():
        pos, scores = index.search(ds.queries.loc[qids, "text"].tolist(), k)
        lens = np.array([len(p) for p in pos])
        short = int((lens < min(k, len(docids))).sum())
        if short:
            log.info(
                "%s: %d of %d queries matched fewer than k=%d documents (%d matched none)",
                split,
                short,
                len(qids),
                k,
                int((lens == 0).sum()),
            )
        frames.append(
            pd.DataFrame(
                {
                    "qid": np.repeat(np.asarray(qids, dtype=object), lens),
                    "docid": docids[np.concatenate(pos)] if len(pos) else [],
                    "rank": np.concatenate([np.arange(1, n + 1) for n in lens]).astype(np.int32),
                    "bm25": np.concatenate(scores).astype(np.float32),
                    "split": split,
                }
            )
        )
    df = pd.concat(frames, ignore_index=True)
    return df.astype({"qid": "string", "docid": "string", "split": "string"})


def check_output(cands: pd.DataFrame, n_queries: int) -> None:
    """Refuse a degenerate result before it replaces the previous candidates: no row at all, or scores that are
    not finite (BM25 parameters far out of range overflow)."""
    if cands.empty:
        raise DataError(
            f"BM25 found no candidate for any of the {n_queries} queries: nothing is written (the previous "
            f"candidates.parquet, if any, is kept); check retrieval.fields, retrieval.stopwords and the corpus texts"
        )
    bad = ~np.isfinite(cands.bm25.to_numpy(np.float64))
    if bad.any():
        raise DataError(
            f"{int(bad.sum())} of {len(cands)} BM25 scores are not finite (first: query {cands.qid[bad].iloc[0]!r}): "
            f"nothing is written (the previous candidates.parquet is kept); use retrieval.k1 and retrieval.b in "
            f"BM25's usual ranges"
        )


def bm25_metrics(ds: Dataset, cands: pd.DataFrame) -> dict[str, dict[str, float]]:
    out = {}
    for split, group in cands.groupby("split", sort=False):
        run = group.rename(columns={"bm25": "score"})
        out[str(split)] = evaluate(ds.qrels[str(split)], run)
    return out


def run(cfg: DictConfig) -> dict[str, Any]:
    ws = Workspace.from_cfg(cfg)
    with start_run(cfg, stage="candidates") as tracker:
        t0 = time.perf_counter()
        ds = load_dataset(cfg)
        splits = queries_per_split(
            ds, list(cfg.retrieval.splits or sorted(ds.qrels, key=lambda s: (s != "train", s)))
        )
        index = build_index(ds, cfg.retrieval)
        cands = build_candidates(ds, index, splits, cfg.retrieval.k)
        check_output(cands, sum(len(q) for q in splits.values()))
        write_parquet_atomic(cands, ws.candidates)
        ds_dir = dataset_dir(cfg)
        write_json_atomic(
            fingerprint.record([cfg.retrieval], {"dataset": ds_dir}) | {"dataset_dir": str(ds_dir)},
            ws.candidates_record,
        )
        metrics = bm25_metrics(ds, cands)
        write_json_atomic({"bm25": metrics, "k": cfg.retrieval.k}, ws.candidates_metrics)
        seconds = time.perf_counter() - t0
        tracker.log({f"{s}/bm25/{k}": v for s, m in metrics.items() for k, v in m.items()})
        tracker.artifact(ws.candidates, type="candidates")
    print(
        f"candidates: {len(cands)} rows for {cands.qid.nunique()} queries -> {ws.candidates} ({seconds:.1f}s)"
    )
    for split, m in metrics.items():
        print(
            f"  BM25 {split:>5}: "
            + "  ".join(f"{k}={v:.4f}" for k, v in m.items() if k != "queries")
            + f"  ({m['queries']} queries)"
        )
    return metrics


STAGE = Stage(
    name=lambda cfg: "candidates",
    run=run,
    config=lambda cfg: [data_config(cfg), cfg.retrieval],
    inputs=lambda cfg, ws: {"dataset": dataset_dir(cfg)},
    outputs=lambda cfg, ws: [ws.candidates],
)
