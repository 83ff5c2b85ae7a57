"""RankNet distillation: pairwise logistic loss with the teacher's soft pair preferences as targets.

Burges et al., 2005, "Learning to Rank using Gradient Descent"; soft targets from teacher score differences
as in RankDistil (Reddi et al., 2021).

    P_ij = sigmoid((t_i - t_j) / T)          target probability that i ranks above j
    loss = sum_g sum_{i<j} -P_ij log sigmoid(s_i - s_j) - (1 - P_ij) log sigmoid(s_j - s_i)
    grad_i = sum_{j != i} sigmoid(s_i - s_j) - P_ij
    hess_i = sum_{j != i} sigmoid(s_i - s_j) (1 - sigmoid(s_i - s_j))

Example: s = [0, 0], t = [2, 0], T = 1 -> P_01 = 0.881, grad = [0.5 - 0.881, 0.5 - 0.119] = [-0.381, 0.381].
Memory is O(sum of width^2) (`GroupObjective` runs it on buckets of similar-sized queries).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from distill.objectives.groups import GroupObjective, Groups


class RankNetKD(GroupObjective):
    power = 2

    def __init__(self, temperature: float = 1.0):
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        self.temperature = temperature

    def _pairs(self, s, t, g: Groups):
        S, T = g.matrix(s), g.matrix(t)
        diff = S[:, :, None] - S[:, None, :]
        target = expit((T[:, :, None] - T[:, None, :]) / self.temperature)
        valid = g.mask[:, :, None] & g.mask[:, None, :]
        valid &= ~np.eye(S.shape[1], dtype=bool)[None]
        return diff, target, valid

    def _loss(self, s, t, g: Groups) -> float:
        diff, target, valid = self._pairs(s, t, g)
        # -P log sig(d) - (1-P) log sig(-d) = P softplus(-d) + (1-P) softplus(d); each unordered pair counted once
        per_pair = target * np.logaddexp(0, -diff) + (1 - target) * np.logaddexp(0, diff)
        return float(0.5 * per_pair[valid].sum())

    def _grad_hess(self, s, t, g: Groups) -> tuple[np.ndarray, np.ndarray]:
        diff, target, valid = self._pairs(s, t, g)
        sig = expit(diff)
        grad = np.where(valid, sig - target, 0.0).sum(axis=2)
        hess = np.where(valid, sig * (1 - sig), 0.0).sum(axis=2)
        return g.rows(grad), g.rows(hess)
