"""`make loadtest`: the cascade server under the simulator's load profile, static depth against dynamic, and the
simulator's prediction for the same arrivals beside what was measured.

For each policy in `loadtest.policies` a server (`distill/serving`) starts in a child process on a free
loopback port with `serve.policy` set; nothing but that local server is contacted. The first server's warm-up
costs give the capacity (queries/s at the deepest static depth, `serve.workers` in parallel); Poisson arrivals
follow `loadtest.load` (base and burst utilisations of that capacity, `distill.evaluation.cascade.arrivals`),
each arrival a test query (every query equally often, in a seeded order). An asyncio client (httpx) sends each
request at its arrival time without waiting for earlier answers (open loop, as arrivals are in production) and
records the latency it saw, the depth the server chose and the nDCG@10 of the served top 10.

The simulation replays the same arrivals and queries through `simulate` with the same `DepthController`
settings, the server's measured costs, and the nDCG@10 each query gets at each depth from the server's own
rankings (one pass of every test query at the deepest depth, in the first server process).

Writes `loadtest.json` and `loadtest.md` to the workspace: per policy and phase (all, base, burst), served and
simulated p50/p99 latency, nDCG@10, teacher-on ratio and mean depth.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from distill.config import typed
from distill.data.prepare import load_dataset
from distill.errors import StageNotReadyError
from distill.evaluation.cascade import arrivals, quality_table, query_order, simulate
from distill.evaluation.report import md_table
from distill.evaluation.schema import LoadConfig
from distill.ir.metrics import per_query
from distill.serving.schema import LoadtestConfig, ServeConfig
from distill.serving.service import controller
from distill.workspace import Workspace, write_json_atomic, write_text_atomic


# ---------------------------------------------------------------------------------------------- the server
def _child(container: dict, port: int, rankings: str | None, queries: list[str]) -> None:
    """A server process: load the cascade, optionally write its rankings of `queries` at the deepest depth
    (qid order as given), then serve on 127.0.0.1:`port`."""
    from distill.serving.service import CascadeService
    from distill.serving.stage import serve

    cfg = OmegaConf.create(container)
    service = CascadeService(cfg)
    if rankings:
        k = max(service.sc.ks)
        frames = []
        for i, text in enumerate(queries):
            r = service.rank(text, k)
            n = len(r["docids"])
            frames.append(
                pd.DataFrame(
                    {
                        "i": i,
                        "docid": r["docids"],
                        "rank": np.arange(1, n + 1),
                        "s": r["student"],
                        "t": r["teacher"],
                    }
                )
            )
        pd.concat(frames).to_parquet(rankings)
    serve(service, "127.0.0.1", port, quiet=True)


@contextlib.contextmanager
def server(
    cfg: DictConfig, policy: str, timeout_s: float, rankings: str | None, queries: list[str]
) -> Iterator[str]:
    """A local server with `serve.policy=policy` in a child process; yields its base URL once /health answers."""
    from distill.dashboard import free_port, wait_until_up

    port = free_port("127.0.0.1")
    container: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    container["serve"] = {**container["serve"], "policy": policy, "host": "127.0.0.1", "port": port}
    proc = mp.get_context("spawn").Process(
        target=_child, args=(container, port, rankings, queries), daemon=True
    )
    proc.start()
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_until_up(f"{url}/health", proc, timeout_s, ours=lambda body: _pid(body) == proc.pid):
            raise StageNotReadyError(
                f"the {policy} server did not answer /health within loadtest.start_timeout_s={timeout_s}"
                if proc.is_alive()
                else f"the {policy} server stopped while loading (exit status {proc.exitcode}); its error is above"
            )
        yield url
    finally:
        proc.terminate()
        proc.join(15)
        if proc.is_alive():
            proc.kill()


def _pid(body: bytes) -> int | None:
    import json

    try:
        return int(json.loads(body)["pid"])
    except (ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------- the client
async def _send(url: str, texts: list[str], arrive: np.ndarray, timeout_s: float) -> list[dict[str, Any]]:
    """Each request at its arrival time (open loop); latency as the client saw it."""
    import httpx

    out: list[dict[str, Any]] = [{} for _ in texts]
    limits = httpx.Limits(max_connections=len(texts) + 1, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:
        start = time.perf_counter()

        async def one(i: int) -> None:
            delay = start + arrive[i] - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t = time.perf_counter()
            try:
                r = await client.get("/search", params={"q": texts[i], "k": 10})
                body = r.json() if r.status_code == 200 else {}
                out[i] = {"status": r.status_code, **body}
            except httpx.HTTPError as e:
                out[i] = {"status": 0, "error": type(e).__name__}
            out[i]["latency_ms"] = (time.perf_counter() - t) * 1000.0

        await asyncio.gather(*(one(i) for i in range(len(texts))))
    return out


# ------------------------------------------------------------------------------------------------ analysis
def phases(arrive: np.ndarray, load: LoadConfig) -> np.ndarray:
    """ "burst" or "base" for each arrival time (the profile's bursts close each `burst_every_s` period)."""
    return np.where((arrive % load.burst_every_s) >= load.burst_every_s - load.burst_s, "burst", "base")


def summarise(lat: np.ndarray, ndcg: np.ndarray, k: np.ndarray, phase: np.ndarray) -> list[dict[str, Any]]:
    rows = []
    for name, m in [("all", np.ones(len(lat), bool)), ("base", phase == "base"), ("burst", phase == "burst")]:
        if m.any():
            rows.append(
                {
                    "phase": name,
                    "requests": int(m.sum()),
                    "p50_ms": float(np.percentile(lat[m], 50)),
                    "p99_ms": float(np.percentile(lat[m], 99)),
                    "ndcg@10": float(np.mean(ndcg[m])),
                    "teacher_on": float(np.mean(k[m] > 0)),
                    "mean_k": float(np.mean(k[m])),
                }
            )
    return rows


class MeasuredCosts:
    """Costs per depth (ms) in the simulator's interface (`service_ms(n, k)`): a fixed part plus the teacher's."""

    def __init__(self, fixed_ms: float, teacher_ms: dict[int, float]):
        self.fixed_ms, self.teacher_ms = fixed_ms, teacher_ms

    @classmethod
    def of_server(cls, costs: dict[str, Any], planned: bool = False) -> MeasuredCosts:
        """The server's estimates from /info: their means, or (`planned`) what its controller plans with."""
        z = float(costs["deviations"]) if planned else 0.0
        return cls(
            float(costs["fixed_ms"]) + z * float(costs["fixed_dev_ms"]),
            {
                int(k): float(v) + z * float(costs["teacher_dev_ms"][k])
                for k, v in costs["teacher_ms"].items()
            },
        )

    @classmethod
    def of_run(cls, answers: list[dict[str, Any]], start: MeasuredCosts) -> tuple:
        """(mean costs, deviations) as measured in the run: each answer's service time (total - queue) by depth;
        depths the run never used keep the start costs."""
        df = pd.DataFrame(
            [
                {"k": a["teacher_k"], "ms": a["timings_ms"]["total"] - a["timings_ms"]["queue"]}
                for a in answers
                if "timings_ms" in a
            ]
        )
        mean = {k: start.fixed_ms + v for k, v in start.teacher_ms.items()}
        dev = dict.fromkeys(mean, 0.0)
        for k, g in df.groupby("k") if len(df) else []:
            mean[int(k)] = float(g.ms.mean())
            dev[int(k)] = float((g.ms - g.ms.mean()).abs().mean())
        return cls(0.0, mean), dev

    def service_ms(self, n: int, k: Any) -> np.ndarray:
        return self.fixed_ms + np.vectorize(self.teacher_ms.__getitem__, otypes=[float])(np.asarray(k))


def served_ndcg(qrels: pd.DataFrame, qids: list[str], answers: list[dict[str, Any]]) -> np.ndarray:
    """nDCG@10 of each answer's top 10 in the order served (its ranks: the scores of the teacher's head and the
    student's tail are on different scales), 0 for a failed request."""
    run = pd.DataFrame(
        [
            {"qid": f"{qid}#{i}", "docid": r["docid"], "score": -float(r["rank"])}
            for i, (qid, a) in enumerate(zip(qids, answers, strict=True))
            for r in a.get("results", [])
        ],
        columns=["qid", "docid", "score"],
    )
    keys = [f"{qid}#{i}" for i, qid in enumerate(qids)]
    base = pd.DataFrame({"key": keys, "qid": qids})
    rel = qrels.merge(base, on="qid").drop(columns="qid").rename(columns={"key": "qid"})
    pq = per_query(rel, run)["ndcg@10"] if len(run) else pd.Series(dtype=float)
    return pq.reindex(keys).fillna(0.0).to_numpy()


def run(cfg: DictConfig) -> dict[str, Any]:
    lc: LoadtestConfig = typed(cfg.loadtest, LoadtestConfig, "loadtest")
    sc: ServeConfig = typed(cfg.serve, ServeConfig, "serve")
    ws = Workspace.from_cfg(cfg)
    ds = load_dataset(cfg)
    split = str(cfg.evaluate.split)
    qrels = ds.qrels[split]
    qids = sorted(set(qrels.qid) & set(ds.queries.index))
    if not qids:
        raise StageNotReadyError(f"the dataset has no judged {split} queries to send")
    texts = ds.queries.loc[qids, "text"].astype(str).str.strip().tolist()
    out: dict[str, Any] = {"split": split, "load": asdict(lc.load), "serve": asdict(sc), "policies": {}}
    arrive = which = qtab = None
    with tempfile.TemporaryDirectory() as tmp:
        rankings = str(Path(tmp) / "rankings.parquet")
        for n_policy, policy in enumerate(lc.policies):
            first = n_policy == 0
            with server(cfg, policy, lc.start_timeout_s, rankings if first else None, texts) as url:
                import httpx

                info = httpx.get(f"{url}/info", timeout=10).json()
                if first:
                    costs0 = MeasuredCosts.of_server(info["costs"])
                    capacity = sc.workers / (float(costs0.service_ms(sc.n, max(sc.ks))) / 1000.0)
                    arrive = arrivals(lc.load, capacity)[: lc.max_requests]
                    which = query_order(len(qids), len(arrive), lc.load.seed)
                    qtab = _quality(pd.read_parquet(rankings), qids, qrels, sc)
                    out["capacity_qps"] = capacity
                    out["student"], out["teacher"] = info["student"], info["teacher"]
                assert arrive is not None and which is not None and qtab is not None
                answers = asyncio.run(_send(url, [texts[i] for i in which], arrive, lc.timeout_s))
                after = httpx.get(f"{url}/info", timeout=10).json()
            out["policies"][policy] = _compare(
                policy, sc, lc.load, arrive, which, qids, qrels, qtab, answers, info, after
            )
    write_json_atomic(out, ws.root / "loadtest.json")
    text = report(out)
    write_text_atomic(text, ws.root / "loadtest.md")
    print(text)
    print(f"-> {ws.root / 'loadtest.json'}, {ws.root / 'loadtest.md'}")
    return out


def _quality(rk: pd.DataFrame, qids: list[str], qrels: pd.DataFrame, sc: ServeConfig) -> pd.DataFrame:
    """nDCG@10 of every test query at every depth, from the server's own rankings."""
    cands = rk.assign(qid=np.asarray(qids, dtype=object)[rk.i.to_numpy()])
    return quality_table(qrels, cands, cands.s.to_numpy(), cands.t.to_numpy(), [sc.n], sc.ks)[sc.n]


def _compare(
    policy: str,
    sc: ServeConfig,
    load: LoadConfig,
    arrive: np.ndarray,
    which: np.ndarray,
    qids: list[str],
    qrels: pd.DataFrame,
    qtab: pd.DataFrame,
    answers: list[dict[str, Any]],
    info: dict[str, Any],
    after: dict[str, Any],
) -> dict[str, Any]:
    ph = phases(arrive, load)
    sent = [qids[i] for i in which]
    lat = np.array([a["latency_ms"] for a in answers])
    k = np.array([a.get("teacher_k", 0) for a in answers])
    ok = np.array([a.get("status") == 200 for a in answers])
    server_ms = np.array([a["timings_ms"]["total"] for a in answers if "timings_ms" in a])
    overhead = float(np.median(lat[ok] - server_ms)) if ok.any() else 0.0
    quality = qtab.reindex(qids).fillna(0.0)[sc.ks].to_numpy()[which]
    start = MeasuredCosts.of_server(info["costs"])
    run_costs, run_dev = MeasuredCosts.of_run(answers, start)
    z = float(info["costs"]["deviations"])
    run_plan = MeasuredCosts(0.0, {d: v + z * run_dev[d] for d, v in run_costs.teacher_ms.items()})
    out: dict[str, Any] = {"served": summarise(lat, served_ndcg(qrels, sent, answers), k, ph)}
    # the client's overhead (HTTP, JSON, its own scheduling) adds to each latency outside the server's queue
    for name, actual, plan, extra_ms in [
        ("simulated", start, MeasuredCosts.of_server(info["costs"], planned=True), 0.0),
        ("simulated_run_costs", run_costs, run_plan, overhead),
    ]:
        ctl = controller(sc, policy)
        res = simulate(
            arrive, quality, sc.ks, actual, sc.n, sc.workers, controller=ctl, trace=True, estimate=plan
        )
        sim_q = quality[np.arange(len(arrive)), np.searchsorted(np.asarray(sc.ks), res["k"])]
        out[name] = summarise(res["latency_ms"] + extra_ms, sim_q, res["k"], ph)
        out[f"{name}_depth_changes"] = ctl.changes
    return out | {
        "failed_requests": int((~ok).sum()),
        "client_overhead_ms_median": overhead,
        "costs_at_start": info["costs"],
        "costs_at_end": after["costs"],
        "depth_changes": after["depth_changes"],
    }


def report(out: dict[str, Any]) -> str:
    rows = []
    for policy, r in out["policies"].items():
        for source in ("served", "simulated", "simulated_run_costs"):
            for p in r[source]:
                rows.append({"policy": policy, "source": source, **p})
    df = pd.DataFrame(rows)
    s = out["serve"]
    head = (
        f"# Load test: {out['student']} -> teacher, SLA {s['sla_ms']} ms (dynamic) vs k={s['static_k']} (static)\n\n"
        f"Capacity at k={max(s['ks'])}: {out['capacity_qps']:.1f} queries/s; load: base "
        f"{out['load']['base_utilisation']}x, bursts {out['load']['burst_utilisation']}x for "
        f"{out['load']['burst_s']} s every {out['load']['burst_every_s']} s, {out['load']['duration_s']} s.\n\n"
    )
    return head + md_table(df) + "\n"


__all__ = ["run", "summarise", "phases", "served_ndcg", "MeasuredCosts"]
