"""The one deterministic query split of the project: a query's hash (with a seed) decides its side, independent of
order, so the same query lands on the same side in every run, format and stage."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np


def hash_unit(keys: Iterable[str], seed: int) -> np.ndarray:
    """A number in [0, 1] per key: sha256 of "seed:key" (first 32 bits) / (2^32 - 1)."""
    return np.array(
        [int(hashlib.sha256(f"{seed}:{k}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF for k in keys],
        dtype=np.float64,
    )


def held_out(keys: Iterable[str], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask: True for the keys that fall in the held-out `fraction` (test or validation side)."""
    return hash_unit(keys, seed) < fraction
