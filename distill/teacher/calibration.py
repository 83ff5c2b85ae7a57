"""A precision that checks itself: before bf16, fp16 or int8 scores a job, a calibration sample of the job's own
pairs (`teacher.calibration_pairs`, whole queries spread over the candidates) is scored in fp32 and in that
precision. The ranking must hold: Spearman >= `teacher.min_spearman` over the sample and mean per-query Kendall
tau >= `teacher.min_kendall`. `teacher.dtype=auto` keeps its faster precision only when it passes and otherwise
falls back to fp32, saying so in one line; an explicit precision below the bar is kept with a warning. The
figures go into the soft-label manifest (`calibration`).

Written here because the check needs the job's own pairs and the engine's own batching: the libraries' mixed
precision has no notion of a ranking to preserve.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy.stats import spearmanr

from distill.data.beir import Dataset
from distill.ir.metrics import kendall_per_query
from distill.teacher.engine import engine_for
from distill.teacher.model import TeacherModel

log = logging.getLogger(__name__)


def calibration_sample(candidates: Path, n: int) -> pd.DataFrame:
    """About `n` candidate pairs (qid, docid) of whole queries spread evenly over the file (every k-th query),
    read a batch at a time."""
    counts: dict[str, int] = {}
    for batch in pq.ParquetFile(candidates).iter_batches(batch_size=262_144, columns=["qid"]):
        for q, c in batch.to_pandas()["qid"].astype(str).value_counts(sort=False).items():
            counts[q] = counts.get(q, 0) + int(c)
    if not counts:
        return pd.DataFrame(columns=["qid", "docid"])
    per_query = max(1.0, float(np.mean(list(counts.values()))))
    wanted = max(1, int(round(n / per_query)))
    qids = list(counts)
    step = max(1, len(qids) // wanted)
    chosen = set(qids[::step][:wanted])
    rows = []
    for batch in pq.ParquetFile(candidates).iter_batches(batch_size=262_144, columns=["qid", "docid"]):
        df = batch.to_pandas().astype({"qid": str, "docid": str})
        rows.append(df[df.qid.isin(chosen)])
    return pd.concat(rows, ignore_index=True).drop_duplicates(["qid", "docid"])


def ranking_agreement(sample: pd.DataFrame, ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Spearman over the whole sample and mean per-query Kendall tau (queries whose scores are constant on either
    side are left out), of `got` against `ref`."""

    tau = kendall_per_query(sample, got, ref)
    rho = spearmanr(ref, got)[0] if len(ref) > 1 and np.ptp(ref) > 0 and np.ptp(got) > 0 else float("nan")
    return {"spearman": float(rho), "kendall_per_query": float("nan") if tau is None else tau}


def check_precision(
    models: list[TeacherModel], ds: Dataset, sample: pd.DataFrame, t: Any, load_fp32: Any, requested: str
) -> tuple[list[TeacherModel], dict[str, Any]]:
    """The teachers to score with and the calibration facts: each teacher in a precision other than fp32 is
    compared with itself in fp32 on `sample`; `requested`=auto falls back to fp32 below the bar."""
    if sample.empty:
        return models, {}
    queries = ds.queries.loc[sample.qid, "text"].tolist()
    docs = ds.doc_texts(sample.docid)
    out, facts = [], {}
    for m in models:
        if m.dtype == "fp32":
            out.append(m)
            continue
        fp32 = load_fp32(m.name)
        ref = engine_for(fp32, t).score(queries, docs)
        got = engine_for(m, t).score(queries, docs)
        agree = ranking_agreement(sample.reset_index(drop=True), ref, got)
        ok = agree["spearman"] >= t.min_spearman and agree["kendall_per_query"] >= t.min_kendall
        kept = ok or requested != "auto"
        facts[m.name] = {
            "dtype": m.dtype,
            "pairs": len(sample),
            "queries": int(sample.qid.nunique()),
            # None: undefined (the scores are constant on one side, as a precision too coarse for them makes them)
            **{k: (round(v, 6) if np.isfinite(v) else None) for k, v in agree.items()},
            "passed": bool(ok),
            "scored_in": m.dtype if kept else "fp32",
        }
        line = (
            f"teacher.dtype={requested} ({m.dtype}) on {len(sample)} of the job's pairs against fp32: Spearman "
            f"{agree['spearman']:.5f} (>= {t.min_spearman}), per-query Kendall {agree['kendall_per_query']:.4f} "
            f"(>= {t.min_kendall}; nan: its scores do not vary)"
        )
        if ok:
            log.info("%s: kept", line)
            out.append(m)
        elif requested == "auto":
            print(f"{line}: below the bar, scoring in fp32 instead", flush=True)
            out.append(fp32)
        else:
            log.warning(
                "%s: below the bar; scoring in %s as asked (teacher.dtype=auto would use fp32)", line, m.dtype
            )
            out.append(m)
        if out[-1] is not fp32:
            del fp32
    return out, facts


__all__ = ["calibration_sample", "check_precision", "ranking_agreement"]
