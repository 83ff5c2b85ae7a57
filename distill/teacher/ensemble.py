"""Combining several teachers: the mean of per-query normalised scores.

Normalisations (`teacher.ensemble_norm`): `zscore` (per query, mean 0 / std 1), `minmax` (per query, to
[0, 1]), `rank` (per query, 1 = best, scaled to [0, 1]) and `none` (raw logits averaged).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from distill.errors import ConfigError

NORMS = ("zscore", "minmax", "rank", "none")


def normalise(scores: pd.Series, qids: pd.Series, how: str) -> pd.Series:
    if how not in NORMS:
        raise ConfigError(f"teacher.ensemble_norm={how!r}: use one of {NORMS}")
    g = scores.groupby(qids.to_numpy(), sort=False)
    if how == "zscore":
        std = g.transform("std", ddof=0).replace(0, 1.0)
        return (scores - g.transform("mean")) / std
    if how == "minmax":
        lo, hi = g.transform("min"), g.transform("max")
        return (scores - lo) / (hi - lo).replace(0, 1.0)
    if how == "rank":
        r = g.rank(method="average", ascending=True)
        n = g.transform("size")
        return (r - 1) / (n - 1).replace(0, 1)
    return scores


def combine(columns: list[np.ndarray], qids: pd.Series, how: str) -> np.ndarray:
    """The ensemble score: mean over teachers of per-query normalised scores (fp32)."""
    normed = [normalise(pd.Series(c, dtype="float64"), qids, how).to_numpy() for c in columns]
    return np.mean(normed, axis=0).astype(np.float32)
