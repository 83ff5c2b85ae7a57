"""ListNet distillation: cross-entropy between the teacher's and the student's per-query softmax.

Cao et al., 2007, "Learning to Rank: From Pairwise Approach to Listwise Approach" (top-one probabilities);
the teacher distribution is softened with a temperature as in Hinton et al., 2015, "Distilling the Knowledge in
a Neural Network".

    p_t = softmax(t / T),  p_s = softmax(s)              over each query's candidates
    loss = - sum_g sum_i p_t[i] log p_s[i]
    grad_i = p_s[i] - p_t[i],  hess_i = p_s[i] (1 - p_s[i])   (diagonal of the softmax Jacobian)

Example: s = [0, 0], t = [1, 0], T = 1 -> grad = [0.5 - 0.731, 0.5 - 0.269] = [-0.231, 0.231].
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, softmax

from distill.objectives.groups import GroupObjective, Groups


class ListNetKD(GroupObjective):
    def __init__(self, temperature: float = 1.0):
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        self.temperature = temperature

    def _probs(self, s: np.ndarray, t: np.ndarray, g: Groups) -> tuple[np.ndarray, np.ndarray]:
        S, T = g.matrix(s, -np.inf), g.matrix(t, -np.inf)
        return softmax(S, axis=1), softmax(T / self.temperature, axis=1)

    def _loss(self, s: np.ndarray, t: np.ndarray, g: Groups) -> float:
        S = g.matrix(s, -np.inf)
        _, pt = self._probs(s, t, g)
        logp = np.where(g.mask, log_softmax(S, axis=1), 0.0)
        return float(-(pt * logp).sum())

    def _grad_hess(self, s: np.ndarray, t: np.ndarray, g: Groups) -> tuple[np.ndarray, np.ndarray]:
        ps, pt = self._probs(s, t, g)
        return g.rows(ps - pt), g.rows(ps * (1.0 - ps))
