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

log = logging.getLogger(__name__)

MEASURES = {"ndcg@10": nDCG @ 10, "mrr@10": RR @ 10, "recall@100": R @ 100, "map": AP}


def per_query(qrels: pd.DataFrame, run: pd.DataFrame, measures: dict | None = None) -> pd.DataFrame:
    """One row per evaluated query (index qid), one column per measure.

    `qrels`: qid, docid, relevance (int). `run`: qid, docid, score (higher is better; ties broken by docid).
    """
    measures = measures or MEASURES
    rel = qrels["relevance"].astype(int).to_numpy()
    qq = qrels["qid"].astype(str).to_numpy()
    judged = pd.unique(qq[rel > 0])
    keep = run["qid"].astype(str).isin(set(judged)).to_numpy()
    rq = run["qid"].astype(str).to_numpy()[keep]
    rd = run["docid"].astype(str).to_numpy()[keep]
    rs = run["score"].astype(float).to_numpy()[keep]
    judged_set = set(judged)
    qmask = np.fromiter((x in judged_set for x in qq), bool, len(qq))
    names = {str(m): k for k, m in measures.items()}
    out = pd.DataFrame(0.0, index=pd.Index(judged, name="qid"), columns=list(measures))
    if len(rq):
        qrels_dd = _nested(qq[qmask], qrels["docid"].astype(str).to_numpy()[qmask], rel[qmask].tolist())
        calc = ir_measures.iter_calc(list(measures.values()), qrels_dd, _nested(rq, rd, rs.tolist()))
        got = pd.DataFrame(
            [(m.query_id, names[str(m.measure)], m.value) for m in calc], columns=["q", "m", "v"]
        )
        if len(got):
            wide = got.pivot(index="q", columns="m", values="v")
            out.update(wide.reindex(columns=out.columns))
    return out


def _nested(qids, docids, values) -> dict[str, dict[str, float]]:
    """ir_measures' dict-of-dicts form ({qid: {docid: value}}): it reads that directly, where a DataFrame goes
    through one namedtuple per row (the slowest part of evaluating a million candidates)."""
    out: dict[str, dict[str, float]] = {}
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
