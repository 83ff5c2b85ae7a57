"""The project's two timing loops, `best_of` (the benchmarks: each side warmed up, its best of `repeats` runs
kept, compared only as ratios measured in one run) and `median_ms` (evaluation and exports: the median time to
score one query's candidates, as a served request is), and `machine`, the description of the machine every
measured figure carries."""

from __future__ import annotations

import functools
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
CPU_FLAGS = (
    "avx2",
    "avx512f",
    "avx_vnni",
    "avx512_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
)


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str | None, frozenset[str]] | None:
    """The CPU's model name and flags as the kernel lists them (None where /proc/cpuinfo is not readable)."""
    try:
        with open("/proc/cpuinfo") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return model, frozenset(flags)


def cpu_flags() -> frozenset[str]:
    """The CPU's flags (`avx2`, `avx512_vnni`, `amx_bf16`, ...): empty where the kernel does not list them."""
    info = _cpuinfo()
    return info[1] if info else frozenset()


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU model and its relevant flags, cores, threads, GPU."""
    info: dict[str, Any] = {"platform": platform.platform(), "cores": os.cpu_count()}
    cpu = _cpuinfo()
    if cpu is not None:
        info["cpu"] = cpu[0]
        info["cpu_flags"] = [f for f in CPU_FLAGS if f in cpu[1]]
    else:
        info["cpu"] = platform.processor() or None
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


__all__ = ["CPU_FLAGS", "best_of", "cpu_flags", "machine", "median_ms", "query_groups"]
