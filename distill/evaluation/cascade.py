"""The production cascade, simulated: retrieval -> student reranks the top N -> teacher reranks the top k.

Quality comes from the real runs (per-query nDCG@10 of each (N, k) on the test split); latency from the measured
per-document costs of each stage (measured by `distill.ir.timing.median_ms`). A load profile (Poisson arrivals whose rate
follows a base level with periodic bursts) is replayed through `workers` FIFO servers:

- a static policy always runs (N, k);
- the dynamic policy (dynamic reranking under an SLA, `DepthController`) looks, for each query a worker takes,
  at how long it waited and picks the largest teacher depth k (0 = teacher off) whose wait + service time fits
  the per-query budget; when load falls the wait vanishes and k goes back up, with hysteresis (a depth is raised
  only after `hold_s` seconds of requests that waited well within what it allows), so it does not flap.

The server (`distill/serving`) runs the same `DepthController` on live measurements, so the simulation and the
real service differ only in where the wait and the costs come from.

Each policy gives mean nDCG@10 and p50 / p99 latency; `best_under` picks the best one meeting a p99 budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from distill.evaluation.schema import LoadConfig
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


@dataclass
class DepthController:
    """The teacher depth of each request: static (`static_k`) or dynamic under `sla_ms`.

    Dynamic: the largest k in `ks` whose `wait_ms + service_ms(k)` fits the SLA (none fits: the smallest, i.e.
    the teacher shed). Lowering is immediate (it protects the SLA). Raising is damped: a deeper k is taken only
    after every request for `hold_s` seconds waited at most `raise_margin` x the slack that k leaves
    (`sla_ms - service_ms(k)`), so a load at the edge of capacity does not make the depth flap. `changes`
    counts the depth changes."""

    ks: Sequence[int]
    sla_ms: float | None = None
    static_k: int | None = None
    raise_margin: float = 0.8
    hold_s: float = 1.0

    def __post_init__(self) -> None:
        self.ks = sorted(int(k) for k in self.ks)
        if (self.sla_ms is None) == (self.static_k is None):
            raise ValueError("give exactly one of sla_ms (dynamic) and static_k (static)")
        self.k: int = int(self.static_k if self.static_k is not None else self.ks[-1])
        self.changes = 0
        self.calm_since: float | None = None  # start of the current streak of calm requests
        self.calm_k = self.k  # the deepest k every request of the streak would have allowed

    def choose(self, now_s: float, wait_ms: float, service_ms: Callable[[int], float]) -> int:
        if self.sla_ms is None:
            return self.k
        sla = self.sla_ms
        fits = [k for k in self.ks if wait_ms + service_ms(k) <= sla]
        best = fits[-1] if fits else self.ks[0]
        if best < self.k:
            self._set(best)
            return self.k
        calm = max((k for k in self.ks if wait_ms <= self.raise_margin * (sla - service_ms(k))), default=-1)
        if calm <= self.k:
            self.calm_since = None
            return self.k
        if self.calm_since is None:
            self.calm_since, self.calm_k = now_s, calm
        self.calm_k = min(self.calm_k, calm)
        if now_s - self.calm_since >= self.hold_s:
            self._set(self.calm_k)
        return self.k

    def _set(self, k: int) -> None:
        self.k, self.changes, self.calm_since = k, self.changes + 1, None


class CostModel(Protocol):
    def service_ms(self, n: int, k: Any) -> np.ndarray: ...


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
    costs: CostModel,
    n: int,
    workers: int = 1,
    sla_ms: float | None = None,
    static_k: int | None = None,
    controller: DepthController | None = None,
    trace: bool = False,
    estimate: CostModel | None = None,
) -> dict[str, Any]:
    """Replay arrivals through FIFO workers. `quality[i, j]`: nDCG of the i-th arrival's query at depth ks[j].

    Static policy: `static_k`. Dynamic policy: `sla_ms` (a `DepthController` with default hysteresis), or a
    configured `controller`. `costs` is anything with `service_ms(n, ks)`; the controller plans with `estimate`
    when given (as a server plans with estimates, not the true costs). With `trace`, the result also holds each
    arrival's latency (`latency_ms`) and depth (`k`)."""
    ks_arr = np.asarray(ks)
    service = costs.service_ms(n, ks_arr) / 1000.0
    planned = (estimate or costs).service_ms(n, ks_arr) / 1000.0
    ctl = controller or DepthController(ks, sla_ms=sla_ms, static_k=static_k)
    col = {int(k): j for j, k in enumerate(ks_arr)}
    free = np.zeros(workers)
    lat = np.empty(len(arrive_s))
    chosen = np.empty(len(arrive_s), dtype=np.int64)
    for i, t in enumerate(arrive_s):
        w = int(np.argmin(free))
        wait = max(0.0, free[w] - t)
        j = col[ctl.choose(t + wait, wait * 1000.0, lambda k: float(planned[col[k]]) * 1000.0)]
        free[w] = t + wait + service[j]
        lat[i] = (wait + service[j]) * 1000.0
        chosen[i] = j
    q = quality[np.arange(len(arrive_s)), chosen]
    k_used = ks_arr[chosen]
    out: dict[str, Any] = {
        "ndcg@10": float(q.mean()) if len(q) else 0.0,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else 0.0,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else 0.0,
        "teacher_on": float((k_used > 0).mean()) if len(lat) else 0.0,
        "mean_k": float(k_used.mean()) if len(lat) else 0.0,
        "queries": len(lat),
        "depth_changes": ctl.changes,
    }
    if trace:
        out |= {"latency_ms": lat, "k": k_used}
    return out


def query_order(n_queries: int, n_arrivals: int, seed: int) -> np.ndarray:
    """Which query each arrival asks: every query equally often (up to one), in a seeded random order."""
    rng = np.random.default_rng(seed + 1)
    return rng.permutation(np.resize(rng.permutation(n_queries), n_arrivals))


def sweep(
    qtab: pd.DataFrame, costs: Costs, load: Load, slas_ms: Sequence[float]
) -> tuple[pd.DataFrame, np.ndarray]:
    """Every static (n, k) and every dynamic (n, SLA) policy under the same arrivals. Returns (table, arrivals)."""
    ns = sorted({n for n, _ in qtab.columns})
    n_max = max(ns)
    k_max = max(k for n, k in qtab.columns if n == n_max)
    capacity = load.workers / (float(costs.service_ms(n_max, k_max)) / 1000.0)
    arrive = arrivals(load, capacity)
    which = query_order(len(qtab), len(arrive), load.seed)
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
    return records(ok.sort_values(["ndcg@10", "p99_ms"], ascending=[False, True]).head(1))[0]


def records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The table's rows as plain records, a missing value (a static policy's SLA) as None, never NaN."""
    import json

    return json.loads(table.to_json(orient="records"))
