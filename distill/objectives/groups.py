"""Contiguous query groups as one padded matrix, so objectives run over all groups at once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Groups:
    """Rows [offsets[g], offsets[g] + sizes[g]) belong to group g. `index` maps (group, slot) -> row, -1 = pad."""

    sizes: np.ndarray
    index: np.ndarray
    mask: np.ndarray

    @classmethod
    def from_sizes(cls, sizes) -> Groups:
        sizes = np.asarray(sizes, dtype=np.int64)
        if (sizes < 1).any():
            raise ValueError("every query group needs at least one row")
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        width = int(sizes.max()) if len(sizes) else 0
        slot = np.arange(width)
        mask = slot[None, :] < sizes[:, None]
        index = np.where(mask, offsets[:, None] + slot[None, :], -1)
        return cls(sizes, index, mask)

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
