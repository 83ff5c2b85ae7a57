"""The project's one metrics function, on ir_measures (pytrec_eval underneath).

nDCG uses the grades as gains (trec_eval). Queries that have relevant judgements but no ranked document score 0 (pytrec_eval would silently skip them).
Queries with no relevant judgement at all are left out and counted, as trec_eval does.
"""

from __future__ import annotations

import logging

import ir_measures
import numpy as np
import pandas as pd
from ir_measures import AP, RR, R, nDCG
from scipy.stats import kendalltau

log = logging.getLogger(__name__)

QUERY_CHUNK = 20_000
MEASURES = {"ndcg@10": nDCG @ 10, "mrr@10": RR @ 10, "recall@100": R @ 100, "map": AP}


def per_query(qrels: pd.DataFrame, run: pd.DataFrame, measures: dict | None = None) -> pd.DataFrame:
    """One row per evaluated query (index qid), one column per measure.

    `qrels`: qid, docid, relevance (int). `run`: qid, docid, score (higher is better; ties broken by docid).
    """
    measures = measures or MEASURES
    q = pd.DataFrame(
        {
            "qid": qrels["qid"].astype(str).to_numpy(),
            "docid": qrels["docid"].astype(str).to_numpy(),
            "rel": qrels["relevance"].astype(int).to_numpy(),
        }
    )
    judged = pd.unique(q.loc[q.rel > 0, "qid"])
    r = pd.DataFrame(
        {
            "qid": run["qid"].astype(str).to_numpy(),
            "docid": run["docid"].astype(str).to_numpy(),
            "score": run["score"].astype(float).to_numpy(),
        }
    )
    names = {str(m): k for k, m in measures.items()}
    out = pd.DataFrame(0.0, index=pd.Index(judged, name="qid"), columns=list(measures))
    # A chunk of queries at a time: ir_measures holds its input as dicts, ~100 bytes per ranked document.
    chunk = pd.Series(np.arange(len(judged)) // QUERY_CHUNK, index=judged)
    q_chunk, r_chunk = q.qid.map(chunk).to_numpy(), r.qid.map(chunk).to_numpy()
    rows = []
    for c in range(int(chunk.max()) + 1 if len(chunk) else 0):
        qc, rc = q[q_chunk == c], r[r_chunk == c]
        if len(rc):
            calc = ir_measures.iter_calc(
                list(measures.values()),
                _nested(qc.qid, qc.docid, qc.rel.tolist()),
                _nested(rc.qid, rc.docid, rc.score.tolist()),
            )
            rows += [(m.query_id, names[str(m.measure)], m.value) for m in calc]
    if rows:
        got = pd.DataFrame(rows, columns=["q", "m", "v"]).pivot(index="q", columns="m", values="v")
        out.update(got.reindex(columns=out.columns))
    return out


def _nested(qids, docids, values) -> dict[str, dict[str, float]]:
    """ir_measures' dict-of-dicts form ({qid: {docid: value}}): it reads that directly, where a DataFrame goes
    through one namedtuple per row (the slowest part of evaluating a million candidates)."""
    out: dict[str, dict[str, float]] = {}
    # as plain lists first: iterating an Arrow-backed string column goes through Python one element at a time
    qids = qids.tolist() if hasattr(qids, "tolist") else list(qids)
    docids = docids.tolist() if hasattr(docids, "tolist") else list(docids)
    for q, d, v in zip(qids, docids, values, strict=True):
        out.setdefault(q, {})[d] = v
    return out


def evaluate(qrels: pd.DataFrame, run: pd.DataFrame, measures: dict | None = None) -> dict[str, float]:
    """Mean of each measure over the queries with at least one relevant judgement."""
    pq = per_query(qrels, run, measures)
    n_all = qrels["qid"].nunique()
    if len(pq) < n_all:
        log.info("%d of %d queries have no relevant judgement and are not evaluated", n_all - len(pq), n_all)
    res = {k: float(np.mean(pq[k])) if len(pq) else float("nan") for k in pq.columns}
    res["queries"] = len(pq)
    return res


def quality(qrels: pd.DataFrame, run: pd.DataFrame) -> dict[str, float]:
    """`evaluate`'s measures alone (without its query count): what a metrics table reports."""
    return {k: v for k, v in evaluate(qrels, run).items() if k != "queries"}


def kendall_per_query(
    cands: pd.DataFrame, a: np.ndarray, b: np.ndarray, top: int | None = None
) -> float | None:
    """Mean per-query Kendall tau between scores `a` and reference scores `b` over the same rows; with `top`,
    over each query's `top` rows by `b` only (where disagreement reaches users). Queries where either side is
    constant are skipped."""
    taus = []
    for idx in cands.groupby("qid", sort=False).indices.values():
        if top is not None:
            idx = idx[np.argsort(-b[idx], kind="stable")[:top]]
        x, y = a[idx], b[idx]
        if len(idx) > 1 and np.ptp(x) > 0 and np.ptp(y) > 0:
            t = kendalltau(x, y)[0]
            if np.isfinite(t):
                taus.append(t)
    return float(np.mean(taus)) if taus else None
