"""The project's two timing loops, `best_of` (the benchmarks: each side warmed up, its best of `repeats` runs
kept, compared only as ratios measured in one run) and `median_ms` (evaluation and exports: the median time to
score one query's candidates, as a served request is), and `machine`, the description of the machine every
measured figure carries."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """(the shortest wall time over `repeats` calls of `fn`, the last call's result)."""
    best, out = float("inf"), None
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def median_ms(probe: Callable[[Any], object], groups: Sequence[Any], warmup: int = 2) -> float:
    """Median milliseconds of `probe` over the query groups (after `warmup` untimed calls)."""
    for g in groups[:warmup]:
        probe(g)
    times = []
    for g in groups:
        t = time.perf_counter()
        probe(g)
        times.append((time.perf_counter() - t) * 1000.0)
    return float(np.median(times))


def query_groups(
    cands: pd.DataFrame, queries: int, candidates: int, seed: int
) -> tuple[np.ndarray, list[pd.DataFrame]]:
    """A seeded sample of `queries` queries of `cands` and each one's top `candidates` rows by rank: the
    requests `median_ms` times."""
    qids = cands.qid.unique()
    probe_q = np.random.default_rng(seed).choice(qids, size=min(queries, len(qids)), replace=False)
    groups = [
        g.sort_values("rank").head(candidates) for _, g in cands[cands.qid.isin(probe_q)].groupby("qid")
    ]
    return probe_q, groups


# CPU features that decide which precisions are native (bf16 matrix units) or fast (AVX-512, AVX2)
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU model and its relevant flags, cores, threads, GPU."""
    info: dict[str, Any] = {"platform": platform.platform(), "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as fh:
            cpuinfo = fh.read()
        model = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
            None,
        )
        flags = next(
            (set(line.split(":", 1)[1].split()) for line in cpuinfo.splitlines() if line.startswith("flags")),
            set(),
        )
        info["cpu"] = model
        info["cpu_flags"] = [f for f in CPU_FLAGS if f in flags]
    except OSError:
        info["cpu"] = platform.processor() or None
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


__all__ = ["CPU_FLAGS", "best_of", "machine", "median_ms", "query_groups"]
