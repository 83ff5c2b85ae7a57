"""Margin-MSE distillation: squared error between the student's and the teacher's pairwise margins.

Hofstätter et al., 2020, "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge
Distillation". Over all pairs of a query's candidates:

    loss = sum_g sum_{i<j} ((s_i - s_j) - (t_i - t_j))^2
    grad_i = 2 sum_{j != i} (s_i - s_j) - (t_i - t_j) = 2 (n s_i - sum s - n t_i + sum t)
    hess_i = 2 (n - 1)

Only score differences are learnt, so each query's offset is free (rankings are unaffected).
Example: s = [0, 0], t = [1, 0] -> grad = [-2, 2], hess = [2, 2].
"""

from __future__ import annotations

import numpy as np

from distill.objectives.groups import GroupObjective, Groups


class MarginMSE(GroupObjective):
    def _loss(self, s, t, g: Groups) -> float:
        D = g.matrix(s) - g.matrix(t)
        n = g.sizes[:, None]
        # sum_{i<j} (d_i - d_j)^2 = n sum d^2 - (sum d)^2
        dm = np.where(g.mask, D, 0.0)
        return float((n[:, 0] * (dm**2).sum(1) - dm.sum(1) ** 2).sum())

    def _grad_hess(self, s, t, g: Groups) -> tuple[np.ndarray, np.ndarray]:
        D = np.where(g.mask, g.matrix(s) - g.matrix(t), 0.0)
        n = g.sizes[:, None].astype(np.float64)
        grad = 2.0 * (n * D - D.sum(axis=1, keepdims=True))
        hess = np.broadcast_to(2.0 * (n - 1), D.shape)
        return g.rows(grad), g.rows(hess)
