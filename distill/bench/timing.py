"""The one timing helper of the benchmarks, and the description of the machine every record carries.

Timings are compared only as ratios measured in one run on one machine (a busy machine changes them tenfold),
so each side is warmed up and its best of `repeats` runs is kept.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any

# CPU features that decide which precisions are native (bf16 matrix units) or fast (AVX-512, AVX2)
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """(the shortest wall time over `repeats` calls of `fn`, the last call's result)."""
    best, out = float("inf"), None
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


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


__all__ = ["best_of", "machine"]
