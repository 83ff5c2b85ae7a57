"""The cascade as a service: BM25 top `n` -> the student -> the teacher on the student's top k, with k chosen per
request by the same `DepthController` as the simulation (`distill.evaluation.cascade`), fed with live
measurements: the time the request waited in the queue and running estimates of each stage's cost.

Requests are served by `serve.workers` threads behind one FIFO queue (the simulator's model). Costs: the fixed
part (retrieval, the student over its `n` documents, the rest) and the teacher's milliseconds at each depth k,
each measured on warm-up queries at start and then updated after every request (an exponential moving
average); the teacher's cost is kept per depth because a call has a fixed part that per-document costs hide.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from distill.config import typed
from distill.data.beir import Dataset
from distill.data.prepare import load_dataset
from distill.errors import ConfigError, DistillError, StageNotReadyError
from distill.evaluation.cascade import DepthController
from distill.export.stage import find_ranker
from distill.ir.bm25 import BM25Index
from distill.ir.tantivy_index import TantivyIndex
from distill.retrieval.candidates import build_index, checked_candidates
from distill.serving.schema import ServeConfig
from distill.students.base import Context, Scorer, student_dirs
from distill.workspace import Workspace

log = logging.getLogger(__name__)


class RequestError(DistillError):
    """A request the service cannot answer as asked (the app turns it into a 4xx with this message)."""


@dataclass
class Running:
    """An exponentially weighted mean and mean absolute deviation (Jacobson's estimator, as TCP keeps its
    round-trip time: RFC 6298)."""

    mean: float
    dev: float = 0.0

    def add(self, x: float, a: float) -> None:
        self.dev += a * (abs(x - self.mean) - self.dev)
        self.mean += a * (x - self.mean)


@dataclass
class LiveCosts:
    """Running estimates (ms) of a request's fixed cost and of the teacher's cost at each depth. The service time
    the controller plans with is mean + `deviations` x deviation, so that the tail, not the average, fits.

    A depth the controller stopped using is no longer measured, so a burst's inflated estimate would keep it
    out for good: the estimates of the depths a request did not use relax toward their warm-up figures with a
    half-life of `recovery_s` seconds, until a request measures them again."""

    fixed: Running
    teacher: dict[int, Running]
    smoothing: float = 0.1
    deviations: float = 2.0
    recovery_s: float = 10.0

    def __post_init__(self) -> None:
        self.start = {k: Running(r.mean, r.dev) for k, r in self.teacher.items()}
        self.last_s: float | None = None

    def service_ms(self, k: int) -> float:
        f, t = self.fixed, self.teacher[k]
        return f.mean + t.mean + self.deviations * (f.dev + t.dev)

    def update(self, fixed_ms: float, k: int, teacher_ms: float, now_s: float | None = None) -> None:
        self.fixed.add(fixed_ms, self.smoothing)
        if k > 0:
            self.teacher[k].add(teacher_ms, self.smoothing)
        now_s = time.monotonic() if now_s is None else now_s
        if self.last_s is not None and self.recovery_s > 0:
            w = 1.0 - 0.5 ** (max(0.0, now_s - self.last_s) / self.recovery_s)
            for depth, r in self.teacher.items():
                if depth != k:
                    r.mean += w * (self.start[depth].mean - r.mean)
                    r.dev += w * (self.start[depth].dev - r.dev)
        self.last_s = now_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "fixed_ms": self.fixed.mean,
            "fixed_dev_ms": self.fixed.dev,
            "teacher_ms": {str(k): v.mean for k, v in self.teacher.items()},
            "teacher_dev_ms": {str(k): v.dev for k, v in self.teacher.items()},
            "deviations": self.deviations,
        }


def running(xs: list[float]) -> Running:
    m = float(np.mean(xs)) if xs else 0.0
    return Running(m, float(np.mean(np.abs(np.asarray(xs) - m))) if xs else 0.0)


class Metrics:
    """What GET /metrics reports (Prometheus text format, `prometheus_client`), one registry per service."""

    def __init__(self, sla_ms: float):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "distill_requests", "HTTP requests to /search by status code", ["code"], registry=r
        )
        buckets = sorted({sla_ms * f / 1000.0 for f in (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2, 5, 10, 50)})
        self.latency = Histogram(
            "distill_request_latency_seconds",
            "queue + service time of answered searches",
            buckets=buckets,
            registry=r,
        )
        self.served = Counter("distill_searches", "answered searches", registry=r)
        self.teacher_on = Counter("distill_teacher_on", "answered searches the teacher reranked", registry=r)
        self.teacher_on_ratio = Gauge(
            "distill_teacher_on_ratio", "share of searches the teacher reranked", registry=r
        )
        self.current_k = Gauge(
            "distill_teacher_k", "teacher depth of the latest search (0 = shed)", registry=r
        )
        self.queue = Gauge("distill_queue_depth", "searches waiting or running", registry=r)
        self.depth_changes = Gauge(
            "distill_depth_changes", "times the controller changed the depth", registry=r
        )


def pick_student(ws: Workspace, ctx: Context, name: str, backend: str = "torch") -> Scorer:
    """The student scorer called `name` ("" = the cascade student of metrics.json), served by `backend`: torch
    (the student's folder) or an export's kind (`make export`; refused when stale)."""
    if not name and student_dirs(ws):  # (no student at all: find_scorer says which stage to run)
        metrics = json.loads(ws.metrics.read_text()) if ws.metrics.is_file() else {}
        if "cascade" not in metrics:
            raise StageNotReadyError(
                f"serve.student is not set and {ws.metrics} names no cascade student: run `make evaluate` "
                f"or set serve.student=NAME"
            )
        name = metrics["cascade"]["student"]
    if backend != "torch":
        if "@" in name:
            raise ConfigError(
                f"serve.student={name!r} names an export already; leave serve.backend={backend} out or name the student alone"
            )
        name = f"{name}@{backend}"
    return find_ranker(ctx, name, "serve.student")


def controller(sc: ServeConfig, policy: str) -> DepthController:
    """The depth controller `serve.*` describes, for `policy` (dynamic or static)."""
    return DepthController(
        sc.ks,
        sla_ms=sc.sla_ms if policy == "dynamic" else None,
        static_k=sc.static_k if policy == "static" else None,
        raise_margin=sc.raise_margin,
        hold_s=sc.hold_s,
    )


def corpus_rows(ds: Dataset) -> pd.DataFrame:
    """Every document as a candidate row: what a student's index is built over when it serves live queries."""
    return pd.DataFrame({"qid": "", "docid": ds.corpus.index.to_numpy(), "rank": 0, "bm25": 0.0, "split": ""})


class CascadeService:
    """Loads the workspace's BM25 index, a student and the teacher; `search` answers one query."""

    def __init__(self, cfg: DictConfig):
        from distill.teacher.engine import engine_for
        from distill.teacher.scoring import load_configured_teacher, resolve_teacher, teacher_names

        self.sc: ServeConfig = typed(cfg.serve, ServeConfig, "serve")
        ws = Workspace.from_cfg(cfg)
        self.ds = ds = load_dataset(cfg)
        checked_candidates(cfg, ws, ds)
        names = teacher_names(cfg)
        if len(names) != 1:
            raise ConfigError(f"teacher.ensemble={names}: the server runs one teacher; set teacher.model")
        self.teacher_name = names[0]
        self.engine = engine_for(
            load_configured_teacher(cfg, resolve_teacher(names[0], ws), cfg.teacher.device), cfg.teacher
        )
        # the corpus's token ids, as an index holds them: a request tokenises only its query
        self.engine.keep_documents(ds.doc_texts(list(ds.corpus.index)), ds.queries["text"].iloc[:48].tolist())
        self.student = pick_student(
            ws, Context.of(cfg, ds, ws, corpus_rows(ds)), self.sc.student, self.sc.backend
        )
        if not getattr(self.student, "live", True):
            depth = int(pd.read_parquet(ws.candidates, columns=["rank"])["rank"].max())
            if self.sc.n > depth:
                raise ConfigError(
                    f"serve.n={self.sc.n}: student {self.student.name!r} scores precomputed features, which exist "
                    f"for the top {depth} candidates only (retrieval.k); set serve.n <= {depth} or re-run "
                    f"`make candidates` and `make features` with retrieval.k >= {self.sc.n}"
                )
        self.index: BM25Index | TantivyIndex = build_index(ds, cfg.retrieval, ws)
        self.docids = ds.corpus.index.to_numpy()
        self.known = {str(t).strip(): str(q) for q, t in ds.queries["text"].items()}
        self.controller = controller(self.sc, self.sc.policy)
        self.lock = threading.Lock()
        self.queued = self.served = self.teacher_on = 0
        self.metrics = Metrics(self.sc.sla_ms)
        self.pool = ThreadPoolExecutor(max_workers=self.sc.workers, thread_name_prefix="cascade")
        self.costs = self.warm_up(list(ds.queries["text"].iloc[: self.sc.warmup_queries]))

    # ------------------------------------------------------------------------------------------- one request
    def qid_of(self, text: str) -> str:
        """The dataset's qid of a known query text (its precomputed features apply), else a stable live id."""
        return self.known.get(text) or "live:" + hashlib.sha1(text.encode()).hexdigest()[:16]

    def rank(
        self, text: str, k: int | None, wait_ms: float = 0.0, now_s: float | None = None
    ) -> dict[str, Any]:
        """The cascade's answer to `text` with teacher depth `k` (None: the controller's choice)."""
        t0 = time.perf_counter()
        pos, bm25 = self.index.search([text], self.sc.n)
        t1 = time.perf_counter()
        qid = self.qid_of(text)
        if not getattr(self.student, "live", True) and qid.startswith("live:"):
            raise RequestError(
                f"student {self.student.name!r} scores only the dataset's own queries (its features are "
                f"precomputed); serve a neural student (serve.student=NAME) for other queries"
            )
        rows = pd.DataFrame(
            {
                "qid": qid,
                "docid": self.docids[pos[0]],
                "rank": np.arange(1, len(pos[0]) + 1),
                "bm25": bm25[0].astype(np.float64),
                "query": text,
            }
        )
        student = self.student.score(rows) if len(rows) else np.empty(0)
        t2 = time.perf_counter()
        fixed_ms = (t2 - t0) * 1000.0
        if k is None:
            with self.lock:
                k = self.controller.choose(
                    time.monotonic() if now_s is None else now_s, wait_ms, self.costs.service_ms
                )
        order = np.argsort(-student, kind="stable")
        head = order[: min(k, len(order))]
        teacher = (
            self.engine.score([text] * len(head), self.ds.doc_texts(list(rows.docid.iloc[head])))
            if len(head)
            else np.empty(0, np.float32)
        )
        t3 = time.perf_counter()
        head_order = head[np.argsort(-teacher, kind="stable")]
        ranked = np.concatenate([head_order, order[len(head) :]])
        teacher_all = np.full(len(rows), np.nan)
        teacher_all[head] = teacher
        return {
            "ranked": ranked,
            "docids": rows.docid.to_numpy(),
            "score": np.where(np.isnan(teacher_all), student, teacher_all),
            "student": student,
            "teacher": teacher_all,
            "teacher_k": int(k),  # the depth given to the teacher (0 = shed)
            "scored": len(head),  # documents it scored: min(depth, candidates)
            "timings_ms": {
                "queue": wait_ms,
                "retrieval": (t1 - t0) * 1000.0,
                "student": (t2 - t1) * 1000.0,
                "teacher": (t3 - t2) * 1000.0,
            },
            "fixed_ms": fixed_ms,
        }

    def search(self, text: str, k_out: int, enqueued: float) -> dict[str, Any]:
        """One request on a worker: the controller's depth, the ranking, the cost estimates and stats updated."""
        wait_ms = (time.perf_counter() - enqueued) * 1000.0
        try:
            r = self.rank(text, None, wait_ms)
        finally:
            with self.lock:
                self.queued -= 1
                self.metrics.queue.set(self.queued)
        tm = r["timings_ms"]
        tm["total"] = total = (time.perf_counter() - enqueued) * 1000.0
        m = self.metrics
        with self.lock:
            # a query with fewer candidates than its depth says little about that depth's cost
            self.costs.update(
                r["fixed_ms"], r["teacher_k"] if r["scored"] == r["teacher_k"] else 0, tm["teacher"]
            )
            self.served += 1
            self.teacher_on += r["teacher_k"] > 0
            m.served.inc()
            m.teacher_on.inc(r["teacher_k"] > 0)
            m.teacher_on_ratio.set(self.teacher_on / self.served)
            m.latency.observe(total / 1000.0)
            m.current_k.set(r["teacher_k"])
            m.depth_changes.set(self.controller.changes)
        top = r["ranked"][:k_out]
        head = set(np.flatnonzero(~np.isnan(r["teacher"])).tolist())
        return {
            # rank orders the answer; score is on the scale of the model that gave it (scored_by), which differs
            # between the teacher's head and the student's tail: never sort by it across the two
            "results": [
                {
                    "docid": str(r["docids"][i]),
                    "rank": n + 1,
                    "score": float(r["score"][i]),
                    "scored_by": "teacher" if i in head else "student",
                }
                for n, i in enumerate(top)
            ],
            "n": int(len(r["docids"])),
            "teacher_k": r["teacher_k"],
            "timings_ms": {key: round(v, 3) for key, v in tm.items()},
        }

    def enqueue(self) -> float:
        with self.lock:
            self.queued += 1
            self.metrics.queue.set(self.queued)
        return time.perf_counter()

    # ------------------------------------------------------------------------------------------------ costs
    def warm_up(self, queries: list[str]) -> LiveCosts:
        """Each depth of `serve.ks` over the warm-up queries (after one untimed pass): the starting costs."""
        if not queries:
            raise StageNotReadyError("the dataset has no queries to warm the server up with")
        for q in queries[:2]:
            self.rank(q, max(self.sc.ks))
        fixed: list[float] = []
        teacher: dict[int, Running] = {}
        for k in self.sc.ks:
            runs = [self.rank(q, k) for q in queries]
            fixed += [r["fixed_ms"] for r in runs]
            full = [r["timings_ms"]["teacher"] for r in runs if r["scored"] == k]
            teacher[k] = running(full or [r["timings_ms"]["teacher"] for r in runs]) if k else Running(0.0)
        costs = LiveCosts(
            running(fixed), teacher, self.sc.cost_smoothing, self.sc.cost_deviations, self.sc.cost_recovery_s
        )
        log.info("serving costs at start: %s", costs.as_dict())
        return costs

    def describe(self) -> dict[str, Any]:
        return {
            "student": self.student.name,
            "teacher": self.teacher_name,
            "policy": self.sc.policy,
            "sla_ms": self.sc.sla_ms,
            "static_k": self.sc.static_k,
            "ks": list(self.sc.ks),
            "n": self.sc.n,
            "workers": self.sc.workers,
            "costs": self.costs.as_dict(),
        }

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["CascadeService", "LiveCosts", "RequestError", "controller", "corpus_rows", "pick_student"]
