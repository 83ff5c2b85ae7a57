"""ListMLE distillation: the Plackett-Luce likelihood of the teacher's ordering under the student's scores.

Xia et al., 2008, "Listwise Approach to Learning to Rank: Theory and Algorithm". With pi the candidates sorted
by teacher score (best first) and LSE_k = log sum_{m >= k} exp(s_pi(m)):

    loss = sum_g sum_k LSE_k - s_pi(k)
    grad at rank r = sum_{k <= r} exp(s_pi(r) - LSE_k) - 1
    hess at rank r = sum_{k <= r} p_kr (1 - p_kr),  p_kr = exp(s_pi(r) - LSE_k)

computed in log space (stable for large scores). Example: s = [0, 0], teacher prefers item 0 ->
grad = [0.5 - 1, 0.5 + 1 - 1] = [-0.5, 0.5].
"""

from __future__ import annotations

import numpy as np

from distill.objectives.groups import GroupObjective, Groups


def _logcumsumexp(x: np.ndarray) -> np.ndarray:
    return np.logaddexp.accumulate(x, axis=1)


class ListMLEKD(GroupObjective):
    def _sorted(self, s, t, g: Groups):
        S, T = g.matrix(s, -np.inf), g.matrix(t, -np.inf)
        order = np.argsort(-T, axis=1, kind="stable")  # padding (-inf) sorts last
        Ss = np.take_along_axis(S, order, axis=1)
        lse = _logcumsumexp(Ss[:, ::-1])[:, ::-1]  # LSE_k over the suffix k..n
        return Ss, lse, order

    def _loss(self, s, t, g: Groups) -> float:
        Ss, lse, order = self._sorted(s, t, g)
        m = np.take_along_axis(g.mask, order, axis=1)
        return float(np.where(m, lse - np.where(m, Ss, 0.0), 0.0).sum())

    def _grad_hess(self, s, t, g: Groups) -> tuple[np.ndarray, np.ndarray]:
        Ss, lse, order = self._sorted(s, t, g)
        m = np.take_along_axis(g.mask, order, axis=1)
        with np.errstate(invalid="ignore", over="ignore"):
            neg = np.where(m, -lse, -np.inf)
            p_sum = np.exp(np.where(m, Ss + _logcumsumexp(neg), -np.inf))  # sum_k p_kr
            p2_sum = np.exp(np.where(m, 2 * Ss + _logcumsumexp(2 * neg), -np.inf))  # sum_k p_kr^2
        grad_sorted = np.where(m, p_sum - 1.0, 0.0)
        hess_sorted = np.where(m, p_sum - p2_sum, 0.0)
        grad = np.zeros_like(grad_sorted)
        hess = np.zeros_like(hess_sorted)
        np.put_along_axis(grad, order, grad_sorted, axis=1)
        np.put_along_axis(hess, order, hess_sorted, axis=1)
        return g.rows(grad), g.rows(hess)
