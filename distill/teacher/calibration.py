"""A precision that checks itself: before bf16, fp16 or int8 scores a job, a calibration sample of the job's own
pairs (`teacher.calibration_pairs`, whole queries spread over the candidates) is scored in fp32 and in that
precision. The ranking must hold: Spearman >= `teacher.min_spearman` over the sample and mean per-query Kendall
tau >= `teacher.min_kendall`. `teacher.dtype=auto` keeps its faster precision only when it passes and otherwise
falls back to fp32, saying so in one line; an explicit precision below the bar is kept with a warning. int8 is
first calibrated on the same sample (distill/teacher/int8.py), and `auto` keeps it only if it also scored the
sample faster than fp32. The figures go into the soft-label manifest (`calibration`).

Written here because the check needs the job's own pairs and the engine's own batching: the libraries' mixed
precision has no notion of a ranking to preserve.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy.stats import spearmanr

from distill.data.beir import Dataset
from distill.ir.metrics import kendall_per_query
from distill.teacher import int8
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


def ranking_bar(
    sample: pd.DataFrame, min_spearman: float, min_kendall: float
) -> Callable[[np.ndarray, np.ndarray], tuple[dict[str, float | None], bool]]:
    """The check a precision must pass on `sample`'s pairs (a frame with their qids): `agree(fp32 scores, its
    scores)` -> (Spearman and mean per-query Kendall, rounded; None where undefined, as when a precision too
    coarse for the scores makes them constant), whether both reach the bar)."""
    sample = sample.reset_index(drop=True)

    def agree(ref: np.ndarray, got: np.ndarray) -> tuple[dict[str, float | None], bool]:
        a = ranking_agreement(sample, ref, got)
        ok = bool(a["spearman"] >= min_spearman and a["kendall_per_query"] >= min_kendall)
        return {k: (round(v, 6) if np.isfinite(v) else None) for k, v in a.items()}, ok

    return agree


def int8_teacher(
    teacher: TeacherModel,
    sample: pd.DataFrame,
    queries: list[str],
    docs: list[str],
    workdir: Path,
    *,
    min_spearman: float,
    min_kendall: float,
    batch_tokens: int = 16384,
) -> tuple[TeacherModel, dict[str, Any]]:
    """`teacher` (loaded with teacher.dtype=int8) calibrated on the pairs of `sample` (their `queries` and `docs`)
    against the bar: distill/teacher/int8.py."""
    agree = ranking_bar(sample, min_spearman, min_kendall)
    return int8.calibrate(teacher, queries, docs, agree=agree, workdir=workdir, batch_tokens=batch_tokens)


def check_precision(
    models: list[TeacherModel],
    ds: Dataset,
    sample: pd.DataFrame,
    t: Any,
    load_fp32: Any,
    requested: str,
    workdir: Path | None = None,
) -> tuple[list[TeacherModel], dict[str, Any]]:
    """The teachers to score with and the calibration facts: each teacher in a precision other than fp32 is
    compared with itself in fp32 on `sample`; `requested`=auto falls back to fp32 below the bar. An int8 teacher
    is first calibrated on `sample` (distill/teacher/int8.py, its files in `workdir`); under auto it is kept only
    if it also scored the sample faster than fp32."""
    if sample.empty:
        return models, {}
    sample = sample.reset_index(drop=True)
    queries = ds.queries.loc[sample.qid, "text"].tolist()
    docs = ds.doc_texts(sample.docid)
    agree = ranking_bar(sample, t.min_spearman, t.min_kendall)

    out, facts = [], {}
    for m in models:
        if m.dtype == "fp32":
            out.append(m)
            continue
        slower = False
        if m.dtype == "int8":
            if workdir is None:
                raise ValueError("an int8 teacher needs a folder for its graphs")
            m, found = int8_teacher(
                m,
                sample,
                queries,
                docs,
                workdir / f"teacher-{len(out)}",
                min_spearman=t.min_spearman,
                min_kendall=t.min_kendall,
                batch_tokens=int(t.batch_tokens),
            )
            figures = {k: found["agreement"].get(k) for k in ("spearman", "kendall_per_query")}
            ok = found["passed"]
            slower = requested == "auto" and found["int8_seconds"] >= found["fp32_seconds"]
            extra: dict[str, Any] = {"int8": found}
        else:
            fp32 = load_fp32(m.name)
            figures, ok = agree(
                engine_for(fp32, t).score(queries, docs), engine_for(m, t).score(queries, docs)
            )
            extra = {}

        kept = (ok and not slower) or requested != "auto"
        facts[m.name] = {
            "dtype": m.dtype,
            "pairs": len(sample),
            "queries": int(sample.qid.nunique()),
            **figures,
            "passed": bool(ok),
            "scored_in": m.dtype if kept else "fp32",
            **extra,
        }
        show = {k: float("nan") if v is None else v for k, v in figures.items()}
        line = (
            f"teacher.dtype={requested} ({m.dtype}) on {len(sample)} of the job's pairs against fp32: Spearman "
            f"{show['spearman']:.5f} (>= {t.min_spearman}), per-query Kendall {show['kendall_per_query']:.4f} "
            f"(>= {t.min_kendall}; nan: its scores do not vary)"
        )
        if kept and ok:
            log.info("%s: kept", line)
            out.append(m)
        elif requested == "auto":
            why = "not faster than fp32 on them" if ok else "below the bar"
            print(f"{line}: {why}, scoring in fp32 instead", flush=True)
            out.append(int8.detach(m) if m.dtype == "int8" else fp32)
        else:
            log.warning(
                "%s: below the bar; scoring in %s as asked (teacher.dtype=auto would use fp32)", line, m.dtype
            )
            out.append(m)
    return out, facts


__all__ = ["calibration_sample", "check_precision", "int8_teacher", "ranking_agreement", "ranking_bar"]
