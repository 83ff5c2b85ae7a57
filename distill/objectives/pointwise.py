"""Pointwise regression on teacher scores (the plain baseline of score distillation).

    loss = 1/2 sum_i (s_i - t_i)^2,  grad_i = s_i - t_i,  hess_i = 1

Example: s = [0, 1], t = [1, 1] -> grad = [-1, 0].
"""

from __future__ import annotations

import numpy as np

from distill.objectives.groups import Groups


class SquaredError:
    def loss(self, s, t, g: Groups) -> float:
        return float(0.5 * ((np.asarray(s, float) - np.asarray(t, float)) ** 2).sum())

    def grad_hess(self, s, t, g: Groups) -> tuple[np.ndarray, np.ndarray]:
        d = np.asarray(s, float) - np.asarray(t, float)
        return d, np.ones_like(d)
