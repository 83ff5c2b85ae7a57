"""Plug the distillation objectives into LightGBM and XGBoost, and the graded-label adapter for lambdarank.

    booster = lightgbm.train({"objective": lightgbm_objective(ListNetKD()), ...}, train_set)
    booster = xgboost.train(params, dtrain, obj=xgboost_objective(ListNetKD()))

Labels of the training set are the teacher scores (floats); query groups come from the dataset's groups.
Hessians are floored at `min_hess` so leaves of single-row or saturated groups stay well-defined.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from distill.objectives.groups import GroupObjective, Groups

MIN_HESS = 1e-6


class _GroupCache:
    def __init__(self) -> None:
        self.key: Any = None
        self.groups: Groups | None = None

    def get(self, key: Any, sizes_fn: Callable[[], np.ndarray]) -> Groups:
        if self.groups is None or self.key is not key:
            self.groups = Groups.from_sizes(sizes_fn())
            self.key = key
        return self.groups


def floor_hessian(hess: np.ndarray, min_hess: float) -> np.ndarray:
    """max(hess, min_hess), in place where the objective's array may be written (no second array of every row)."""
    hess = np.asarray(hess)
    if hess.flags.writeable and hess.dtype in (np.float64, np.float32):
        return np.maximum(hess, min_hess, out=hess)
    return np.maximum(hess, min_hess)


def lightgbm_grad_hess(obj: Any, s: np.ndarray, t: Any, groups: Groups, min_hess: float) -> tuple[Any, Any]:
    """The objective's gradients and floored hessians as LightGBM takes them, float32: a `GroupObjective` stores
    them so directly (the same numbers LightGBM's own cast of float64 ones gives, without the float64 arrays and
    their float32 copies held together, about 12 bytes a row); another objective's are cast."""
    if isinstance(obj, GroupObjective):
        grad, hess = obj.grad_hess(s, t, groups, dtype=np.float32)
    else:
        grad, hess = obj.grad_hess(s, t, groups)
        grad, hess = np.asarray(grad, np.float32), np.asarray(hess, np.float32)
    return grad, floor_hessian(hess, min_hess)


def lightgbm_objective(obj: Any, targets: np.ndarray | None = None, min_hess: float = MIN_HESS) -> Callable:
    """`targets`: the teacher scores, when the Dataset's labels hold something else (e.g. integer grades, which
    LightGBM's ranking metrics require)."""
    cache = _GroupCache()

    def fobj(preds: np.ndarray, train_data: Any) -> tuple[np.ndarray, np.ndarray]:
        groups = cache.get(train_data, lambda: np.asarray(train_data.get_group()))
        t = train_data.get_label() if targets is None else targets
        return lightgbm_grad_hess(obj, np.asarray(preds, dtype=np.float64), t, groups, min_hess)

    return fobj


def lightgbm_sklearn_objective(obj: Any, min_hess: float = MIN_HESS) -> Callable:
    """The same objective for LightGBM's scikit-learn and Dask estimators (`LGBMRanker(objective=...)`), which call
    `f(labels, preds, weight, group)`; the labels are the teacher scores."""
    cache = _GroupCache()

    def fobj(
        y_true: np.ndarray, y_pred: np.ndarray, weight: Any, group: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        groups = cache.get(group, lambda: np.asarray(group))
        return lightgbm_grad_hess(
            obj, np.asarray(y_pred, dtype=np.float64), np.asarray(y_true), groups, min_hess
        )

    return fobj


def xgboost_objective(obj: Any, targets: np.ndarray | None = None, min_hess: float = MIN_HESS) -> Callable:
    cache = _GroupCache()

    def fobj(preds: np.ndarray, dtrain: Any) -> tuple[np.ndarray, np.ndarray]:
        groups = cache.get(dtrain, lambda: np.diff(dtrain.get_uint_info("group_ptr")))
        t = dtrain.get_label() if targets is None else targets
        grad, hess = obj.grad_hess(np.asarray(preds, dtype=np.float64), t, groups)
        return grad, floor_hessian(hess, min_hess)

    return fobj


def teacher_grades(t: np.ndarray, groups: Groups, n_grades: int = 5, method: str = "quantile") -> np.ndarray:
    """Integer grades 0..n_grades-1 per query from teacher scores, for LightGBM lambdarank / XGBoost rank:ndcg.

    `quantile`: by rank within the query (the top 1/n_grades of candidates get the top grade);
    `bins`: equal-width bins between the query's lowest and highest teacher score.
    """
    if n_grades < 2:
        raise ValueError(f"n_grades={n_grades} must be at least 2")
    T = groups.matrix(t, np.nan)
    if method == "quantile":
        order = np.argsort(np.argsort(np.where(groups.mask, -T, np.inf), axis=1, kind="stable"), axis=1)
        frac = order / np.maximum(groups.sizes[:, None], 1)
        grades = (n_grades - 1) - np.floor(frac * n_grades)
    elif method == "bins":
        lo, hi = np.nanmin(T, axis=1, keepdims=True), np.nanmax(T, axis=1, keepdims=True)
        width = np.where(hi > lo, hi - lo, 1.0)
        grades = np.floor((T - lo) / width * n_grades).clip(0, n_grades - 1)
    else:
        raise ValueError(f"grade method {method!r}: use quantile or bins")
    return groups.rows(np.nan_to_num(grades)).astype(np.int32)
