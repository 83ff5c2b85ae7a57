"""Contiguous query groups as padded matrices, so objectives run over many groups at once.

Padding every group to the widest one makes one long query inflate the work of all the others (pairwise
objectives hold groups x width^2 cells: 2,000 queries of 100 plus one of 1,000 would need 2,001 x 1,000^2).
`GroupObjective` therefore runs an objective bucket by bucket: groups sorted by size, each bucket padded only to
its own widest group (at most twice its narrowest) and holding at most `CELLS` padded cells, so time and memory follow the sum of the groups'
own work (sum of width^power) instead of groups x max width^power.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

# Padded cells per bucket (one float64 matrix of this many cells is 8 MB; an objective holds a few at a time, and
# larger buckets were no faster: at 5.4M rows 1 << 22 cells peaked ~190 MB higher in LightGBM training).
CELLS = 1 << 20


@dataclass(frozen=True, eq=False)
class Groups:
    """Rows [offsets[g], offsets[g] + sizes[g]) belong to group g. `index` maps (group, slot) -> row, -1 = pad."""

    sizes: np.ndarray

    @classmethod
    def from_sizes(cls, sizes) -> Groups:
        sizes = np.asarray(sizes, dtype=np.int64)
        if (sizes < 1).any():
            raise ValueError("every query group needs at least one row")
        return cls(sizes)

    @functools.cached_property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)

    @functools.cached_property
    def mask(self) -> np.ndarray:
        width = int(self.sizes.max()) if len(self.sizes) else 0
        return np.arange(width)[None, :] < self.sizes[:, None]

    @functools.cached_property
    def index(self) -> np.ndarray:
        slot = np.arange(self.mask.shape[1])
        return np.where(self.mask, self.offsets[:, None] + slot[None, :], -1)

    @property
    def n_rows(self) -> int:
        return int(self.sizes.sum())

    def matrix(self, x: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Row values as a [groups, width] matrix, padded with `fill`."""
        x = np.asarray(x, dtype=np.float64)
        if len(x) != self.n_rows:
            raise ValueError(f"got {len(x)} values for {self.n_rows} rows in the query groups")
        return np.where(self.mask, x[np.maximum(self.index, 0)], fill)

    def rows(self, m: np.ndarray) -> np.ndarray:
        """A [groups, width] matrix back to row order (padding dropped)."""
        return m[self.mask]

    def buckets(self, power: int = 1, cells: int | None = None) -> list[tuple[np.ndarray, Groups]]:
        """(row positions, their groups) per bucket of similar-sized groups whose padded work
        (groups x width^power) stays within `cells` (a group wider than that is a bucket alone). Computed once
        per (power, cells) and kept: boosting asks for the same buckets every round."""
        cells = cells or CELLS
        cache: dict = self.__dict__.setdefault("_bucket_cache", {})
        if (power, cells) not in cache:
            cache[(power, cells)] = list(self._buckets(power, cells))
        return cache[(power, cells)]

    def _buckets(self, power: int, cells: int) -> Iterator[tuple[np.ndarray, Groups]]:
        order = np.argsort(self.sizes, kind="stable")
        width = self.sizes[order]
        work = width.astype(np.float64) ** power  # ascending: the last of a bucket is its widest
        start = 0
        while start < len(order):
            # the longest run order[start:end] of groups at most twice as wide as the first (padding wastes less
            # than half the cells) with (end - start) x work[end - 1] <= cells, at least one group; no more than
            # cells / work[start] groups can fit, so only that window is searched
            similar = int(np.searchsorted(width, 2 * width[start], side="right")) - start
            window = work[start : start + min(similar, int(cells // work[start]) + 1)]
            fits = np.flatnonzero(np.arange(1, len(window) + 1) * window <= cells)
            end = start + (int(fits[-1]) + 1 if len(fits) else 1)
            sel = order[start:end]
            lens = self.sizes[sel]
            first = np.repeat(self.offsets[sel] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
            yield first + np.arange(int(lens.sum())), Groups(lens)
            start = end


class GroupObjective:
    """An objective computed on padded query groups (`_loss`, `_grad_hess` over one `Groups`), run bucket by
    bucket (`Groups.buckets`); `power` is how its padded work grows with a group's width (2: all pairs)."""

    power = 1

    def _loss(self, s: np.ndarray, t: np.ndarray, g: Groups) -> float:
        raise NotImplementedError

    def _grad_hess(self, s: np.ndarray, t: np.ndarray, g: Groups) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def loss(self, s, t, g: Groups) -> float:
        s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
        return float(sum(self._loss(s[r], t[r], b) for r, b in g.buckets(self.power)))

    def grad_hess(self, s, t, g: Groups, dtype: Any = np.float64) -> tuple[np.ndarray, np.ndarray]:
        """Per row, in `dtype`: each bucket is computed in float64 and stored (rounded) as `dtype`, e.g. float32
        for LightGBM, which takes its gradients so (given float64 it holds a float32 copy of both arrays)."""
        s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
        grad, hess = np.empty(len(s), dtype), np.empty(len(s), dtype)
        for r, b in g.buckets(self.power):
            grad[r], hess[r] = self._grad_hess(s[r], t[r], b)
        return grad, hess
