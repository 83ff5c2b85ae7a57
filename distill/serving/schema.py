"""`serve.*` (make serve) and `loadtest.*` (make loadtest): distill/serving."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from distill.config import check, check_positive
from distill.evaluation.schema import LoadConfig
from distill.export.schema import TAGS

LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN_ENV = "DISTILL_SERVE_TOKEN"


@dataclass
class ServeConfig:
    """`make serve` (distill/serving): BM25 top `n` -> the student -> the teacher on the student's top k."""

    host: str = "127.0.0.1"
    port: int = 8000
    # listen on an address other than loopback; every endpoint but /health then needs the token
    allow_remote: bool = False
    # the token clients send as `Authorization: Bearer TOKEN` (null: the environment variable DISTILL_SERVE_TOKEN)
    token: str | None = None
    # a ranker name of `make evaluate`'s table (e.g. bi_encoder_kl); "" = the student the cascade simulation chose
    student: str = ""
    # torch: the student's folder; onnx | onnx-int8 | openvino | openvino-int8: its export (make export)
    backend: str = "torch"
    n: int = 100  # BM25 depth the student reranks
    ks: list[int] = field(default_factory=lambda: [0, 5, 10, 20, 30, 50])  # teacher depths (0 = teacher off)
    policy: str = "dynamic"  # dynamic: the largest k that fits sla_ms | static: always static_k
    static_k: int = 50
    sla_ms: float = 150.0
    # hysteresis: a deeper k only after hold_s seconds of requests whose wait was <= raise_margin x the slack
    # it leaves (sla_ms - its service time)
    raise_margin: float = 0.8
    hold_s: float = 1.0
    workers: int = 1  # requests served at once (FIFO queue in front)
    max_k: int = 100  # the most results a request may ask for
    max_query_chars: int = 1000
    warmup_queries: int = 10  # queries run at each depth at start to measure the costs
    cost_smoothing: float = 0.1  # weight of each new measurement in the running cost estimates
    # the controller plans with mean + cost_deviations x mean absolute deviation of each cost (the tail fits)
    cost_deviations: float = 2.0
    # the cost estimates of depths no request uses relax toward their warm-up figures with this half-life, so a
    # depth a burst made look expensive is tried again once the load is calm
    cost_recovery_s: float = 10.0

    def __post_init__(self) -> None:
        check(self.policy in ("dynamic", "static"), "serve.policy", self.policy, "use dynamic or static")
        backends = ["torch", *TAGS]
        check(self.backend in backends, "serve.backend", self.backend, f"use one of {backends}")
        check_positive(self, "serve", "n", "sla_ms", "workers", "max_k", "max_query_chars", "warmup_queries")
        check(bool(self.ks) and min(self.ks) >= 0, "serve.ks", self.ks, "give depths >= 0")
        check(max(self.ks) <= self.n, "serve.ks", self.ks, "each depth must be <= serve.n")
        check(self.static_k in self.ks, "serve.static_k", self.static_k, f"must be one of serve.ks={self.ks}")
        check(0 < self.raise_margin <= 1, "serve.raise_margin", self.raise_margin, "must be in (0, 1]")
        check(0 < self.cost_smoothing <= 1, "serve.cost_smoothing", self.cost_smoothing, "must be in (0, 1]")
        check(self.cost_deviations >= 0, "serve.cost_deviations", self.cost_deviations, "must be >= 0")
        check(0 < self.port < 65536, "serve.port", self.port, "must be a TCP port")
        check(
            self.host in LOOPBACK or self.allow_remote,
            "serve.host",
            self.host,
            "the server answers on loopback only (/info, /metrics and /search have no authentication there); to "
            "listen elsewhere set serve.allow_remote=true and a token (serve.token or DISTILL_SERVE_TOKEN)",
        )
        check(self.hold_s >= 0, "serve.hold_s", self.hold_s, "must be >= 0")
        check(
            self.cost_recovery_s >= 0,
            "serve.cost_recovery_s",
            self.cost_recovery_s,
            "must be >= 0 (0: never)",
        )


@dataclass
class LoadtestLoad(LoadConfig):
    """`loadtest.load`: the same profile as the simulator's, with errors naming its own keys."""

    KEY: ClassVar[str] = "loadtest.load"


@dataclass
class LoadtestConfig:
    """`make loadtest` (distill/serving/loadtest.py): the test queries against a local server at the load
    profile of the simulator (rates relative to the measured capacity at the deepest static k)."""

    load: LoadtestLoad = field(
        default_factory=lambda: LoadtestLoad(
            duration_s=60.0, base_utilisation=0.5, burst_utilisation=2.0, burst_every_s=20.0, burst_s=6.0
        )
    )
    policies: list[str] = field(default_factory=lambda: ["static", "dynamic"])
    max_requests: int = 5000  # a bound on the requests of one policy's run
    timeout_s: float = 60.0  # per request
    start_timeout_s: float = 300.0  # for the server to load and answer /health

    def __post_init__(self) -> None:
        for p in self.policies:
            check(p in ("static", "dynamic"), "loadtest.policies", p, "use static and/or dynamic")
        check_positive(self, "loadtest", "max_requests", "timeout_s", "start_timeout_s")
