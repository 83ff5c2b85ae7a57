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
    q = pd.DataFrame(
        {
            "query_id": qrels["qid"].astype(str),
            "doc_id": qrels["docid"].astype(str),
            "relevance": qrels["relevance"].astype(int),
        }
    )
    judged = q.loc[q["relevance"] > 0, "query_id"].unique()
    r = pd.DataFrame(
        {
            "query_id": run["qid"].astype(str),
            "doc_id": run["docid"].astype(str),
            "score": run["score"].astype(float),
        }
    )
    r = r[r["query_id"].isin(judged)]
    names = {str(m): k for k, m in measures.items()}
    out = pd.DataFrame(0.0, index=pd.Index(judged, name="qid"), columns=list(measures))
    if len(r):
        for m in ir_measures.iter_calc(list(measures.values()), q[q["query_id"].isin(judged)], r):
            out.at[m.query_id, names[str(m.measure)]] = m.value
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
