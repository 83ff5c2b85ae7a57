"""The production cascade, simulated: retrieval -> student reranks the top N -> teacher reranks the top k.

Quality comes from the real runs (per-query nDCG@10 of each (N, k) on the test split); latency from the measured
per-document costs of each stage (measured by `distill.evaluation.rankers.median_ms`). A load profile (Poisson arrivals whose rate
follows a base level with periodic bursts) is replayed through `workers` FIFO servers:

- a static policy always runs (N, k);
- the dynamic policy (dynamic reranking under an SLA) looks, for each arriving query, at how long it will wait
  for a free worker and picks the largest teacher depth k (0 = teacher off) whose wait + service time fits
  the per-query budget; when load falls the wait vanishes and k goes back up.

Each policy gives mean nDCG@10 and p50 / p99 latency; `best_under` picks the best one meeting a p99 budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from distill.config import LoadConfig
from distill.ir.metrics import per_query


def cascade_run(
    cands: pd.DataFrame, student: np.ndarray, teacher: np.ndarray, n: int, k: int
) -> pd.DataFrame:
    """Final ranking of each query: its BM25 top n reordered by the student, the student's top k by the teacher.

    `cands` has qid and rank (BM25 rank, 1 = best); the returned run scores rank the teacher's top k first, then
    the rest of the top n in the student's order."""
    df = cands[["qid", "docid", "rank"]].assign(s=student, t=teacher)
    df = df[df["rank"] <= n]
    df = df.sort_values(["qid", "s"], ascending=[True, False], kind="stable")
    pos = df.groupby("qid").cumcount().to_numpy()
    top = pos < k
    # teacher-ranked head above the student-ranked tail: head scores are offset above every tail score
    score = np.where(top, 1e6 + df.t.to_numpy(), -pos.astype(np.float64))
    return pd.DataFrame({"qid": df.qid.to_numpy(), "docid": df.docid.to_numpy(), "score": score})


def quality_table(
    qrels: pd.DataFrame,
    cands: pd.DataFrame,
    student: np.ndarray,
    teacher: np.ndarray,
    ns: Sequence[int],
    ks: Sequence[int],
    measure: str = "ndcg@10",
) -> pd.DataFrame:
    """Per-query `measure` for every (n, k): rows are queries, columns a (n, k) MultiIndex."""
    cols = {}
    for n in ns:
        for k in ks:
            if k > n:
                continue
            pq = per_query(qrels, cascade_run(cands, student, teacher, n, k))
            cols[(n, k)] = pq[measure]
    out = pd.DataFrame(cols)
    out.columns = pd.MultiIndex.from_tuples(out.columns, names=["n", "k"])
    return out.fillna(0.0)


@dataclass
class Costs:
    """Milliseconds per query: fixed retrieval, plus per document for the student and the teacher."""

    retrieval_ms: float
    student_ms_per_doc: float
    teacher_ms_per_doc: float

    def service_ms(self, n: int, k: int | np.ndarray) -> np.ndarray:
        return self.retrieval_ms + self.student_ms_per_doc * n + self.teacher_ms_per_doc * np.asarray(k)


Load = LoadConfig  # the load profile: distill.config.LoadConfig (`evaluate.load.*`)


def arrivals(load: Load, capacity_qps: float) -> np.ndarray:
    """Poisson arrival times (s) with a rate that switches between base and burst levels."""
    rng = np.random.default_rng(load.seed)
    peak = load.burst_utilisation * capacity_qps
    # thinning: candidates at the peak rate, kept with probability rate(t) / peak
    n = rng.poisson(peak * load.duration_s)
    t = np.sort(rng.uniform(0, load.duration_s, n))
    in_burst = (t % load.burst_every_s) >= (load.burst_every_s - load.burst_s)
    rate = np.where(in_burst, peak, load.base_utilisation * capacity_qps)
    return t[rng.random(n) < rate / peak]


def simulate(
    arrive_s: np.ndarray,
    quality: np.ndarray,
    ks: Sequence[int],
    costs: Costs,
    n: int,
    workers: int = 1,
    sla_ms: float | None = None,
    static_k: int | None = None,
) -> dict[str, float]:
    """Replay arrivals through FIFO workers. `quality[i, j]`: nDCG of the i-th arrival's query at depth ks[j].

    Static policy: `static_k`. Dynamic policy: `sla_ms`, the largest k with wait + service <= sla_ms (else 0)."""
    ks_arr = np.asarray(ks)
    service = costs.service_ms(n, ks_arr) / 1000.0
    free = np.zeros(workers)
    lat = np.empty(len(arrive_s))
    chosen = np.empty(len(arrive_s), dtype=np.int64)
    for i, t in enumerate(arrive_s):
        w = int(np.argmin(free))
        wait = max(0.0, free[w] - t)
        if static_k is not None:
            j = int(np.flatnonzero(ks_arr == static_k)[0])
        else:
            assert sla_ms is not None
            fits = np.flatnonzero(wait + service <= sla_ms / 1000.0)
            j = int(fits[np.argmax(ks_arr[fits])]) if len(fits) else int(np.argmin(ks_arr))
        free[w] = t + wait + service[j]
        lat[i] = (wait + service[j]) * 1000.0
        chosen[i] = j
    q = quality[np.arange(len(arrive_s)), chosen]
    k_used = ks_arr[chosen]
    return {
        "ndcg@10": float(q.mean()) if len(q) else 0.0,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else 0.0,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else 0.0,
        "teacher_on": float((k_used > 0).mean()) if len(lat) else 0.0,
        "mean_k": float(k_used.mean()) if len(lat) else 0.0,
        "queries": len(lat),
    }


def sweep(
    qtab: pd.DataFrame, costs: Costs, load: Load, slas_ms: Sequence[float]
) -> tuple[pd.DataFrame, np.ndarray]:
    """Every static (n, k) and every dynamic (n, SLA) policy under the same arrivals. Returns (table, arrivals)."""
    ns = sorted({n for n, _ in qtab.columns})
    n_max = max(ns)
    k_max = max(k for n, k in qtab.columns if n == n_max)
    capacity = load.workers / (float(costs.service_ms(n_max, k_max)) / 1000.0)
    arrive = arrivals(load, capacity)
    # each arrival is a test query: every query equally often (up to one), in a random order
    rng = np.random.default_rng(load.seed + 1)
    which = rng.permutation(np.resize(rng.permutation(len(qtab)), len(arrive)))
    rows = []
    for n in ns:
        ks = [k for nn, k in qtab.columns if nn == n]
        quality = qtab[n][ks].to_numpy()[which]
        for k in ks:
            r = simulate(arrive, quality, ks, costs, n, load.workers, static_k=k)
            rows.append({"policy": "static", "n": n, "k": k, "sla_ms": None, **r})
        for sla in slas_ms:
            r = simulate(arrive, quality, ks, costs, n, load.workers, sla_ms=sla)
            rows.append({"policy": "dynamic", "n": n, "k": max(ks), "sla_ms": sla, **r})
    return pd.DataFrame(rows), arrive


def pareto(table: pd.DataFrame, latency: str = "p99_ms") -> pd.DataFrame:
    """The rows no other row beats on both quality (higher) and latency (lower)."""
    t = table.sort_values([latency, "ndcg@10"], ascending=[True, False])
    best, keep = -np.inf, []
    for i, r in t.iterrows():
        if r["ndcg@10"] > best:
            keep.append(i)
            best = r["ndcg@10"]
    return table.loc[keep]


def best_under(table: pd.DataFrame, p99_budget_ms: float) -> dict | None:
    ok = table[table.p99_ms <= p99_budget_ms]
    if ok.empty:
        return None
    return ok.sort_values(["ndcg@10", "p99_ms"], ascending=[False, True]).iloc[0].to_dict()
