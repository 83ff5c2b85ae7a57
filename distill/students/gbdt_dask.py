"""The GBDT student on a Dask cluster: `lightgbm.dask.DaskLGBMRanker` and `xgboost.dask`, same objectives.

    make train-student ARGS="student=lightgbm student.dask.cluster=local student.dask.workers=4"
    make train-student ARGS="student=xgboost student.dask.cluster=tcp://scheduler:8786"

The training rows are cut into one partition per worker at query boundaries, so a query's candidates always
live in one partition and every worker computes exact per-query gradients for its queries; the libraries then
build each tree from histograms summed over workers (data-parallel). Labels are the (blended) teacher scores
for the distillation objectives, integer teacher grades for lambdarank, as on one machine.

Early stopping runs after training, on this process: the validation queries are scored after each tree and the
model is cut at the best validation nDCG@10, stopping the search `early_stopping` trees after the best, as
the single-machine callback does (distributed early-stopping callbacks would see only a worker's share).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from distill import distributed
from distill.objectives.adapters import lightgbm_sklearn_objective, xgboost_objective
from distill.objectives.groups import Groups
from distill.students.gbdt_params import xgboost_params
from distill.students.schema import GBDTConfig, LightGBMConfig, XGBoostConfig

log = logging.getLogger(__name__)


@contextlib.contextmanager
def dask_client(sc: GBDTConfig) -> Iterator[Any]:
    """The client of `student.dask` (distill/distributed.py)."""
    with distributed.dask_client(sc.dask, "student.dask") as client:
        yield client


def partitions(sizes: np.ndarray, n: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Cut consecutive query groups into at most `n` parts of about equal rows, never splitting a group.
    Returns (rows per part, groups per part)."""
    ends = np.cumsum(sizes)
    targets = ends[-1] * np.arange(1, n) / n
    cuts = np.unique(
        [int(np.abs(ends - t).argmin()) + 1 for t in targets]
    )  # the group end nearest each target
    bounds = [0, *[int(c) for c in cuts if 0 < c < len(sizes)], len(sizes)]
    groups = tuple(int(b - a) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a)
    rows = tuple(int(sizes[a:b].sum()) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a)
    return rows, groups


def ndcg_at(preds: np.ndarray, grades: np.ndarray, groups: Groups, k: int = 10) -> float:
    """Mean nDCG@k with gains 2^grade - 1 (LightGBM's and XGBoost's definition; a query with no gain counts 1)."""
    P = groups.matrix(preds, -np.inf)
    gains = 2.0 ** groups.matrix(grades.astype(np.float64), 0.0) - 1
    disc = 1 / np.log2(np.arange(2, k + 2))
    top = np.argsort(-P, axis=1, kind="stable")[:, :k]
    dcg = (np.take_along_axis(gains, top, 1) * disc[: top.shape[1]]).sum(1)
    ideal = (-np.sort(-gains, axis=1)[:, :k] * disc[: top.shape[1]]).sum(1)
    return float(np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1), 1.0).mean())


def best_prefix(prefix_preds: Any, n_trees: int, yv: np.ndarray, sizes_v: np.ndarray, patience: int) -> int:
    """The number of trees with the best validation nDCG@10; `prefix_preds(n)` scores the validation rows with
    the first n trees."""
    if not len(sizes_v):
        return n_trees
    groups = Groups.from_sizes(sizes_v)
    best, best_n = -1.0, n_trees
    for i in range(n_trees):
        score = ndcg_at(prefix_preds(i + 1), yv, groups)
        if score > best:
            best, best_n = score, i + 1
        elif i + 1 - best_n >= patience:
            break
    return best_n


def fit_lightgbm_dask(sc: LightGBMConfig, X, y, grades, sizes, Xv, yv_grades, sizes_v, obj) -> Any:
    import dask.array as da
    import lightgbm as lgb

    with dask_client(sc) as client:
        rows, groups = partitions(sizes, max(1, len(client.scheduler_info()["workers"])))
        custom = sc.objective != "lambdarank"
        labels = y if custom else grades
        model = lgb.DaskLGBMRanker(
            client=client,
            objective=lightgbm_sklearn_objective(obj) if custom else "lambdarank",
            n_estimators=sc.num_trees,
            learning_rate=sc.learning_rate,
            num_leaves=sc.num_leaves,
            max_depth=sc.max_depth,
            min_child_samples=sc.min_data_in_leaf,  # the scikit-learn API's name of min_data_in_leaf
            random_state=sc.seed,
            metric="None",  # ndcg would reject the float teacher scores; validation runs here after training
            deterministic=True,
            verbose=-1,
            label_gain=[2**i - 1 for i in range(sc.grades)],
        )
        model.fit(
            da.from_array(X, chunks=(rows, X.shape[1])),
            da.from_array(labels, chunks=(rows,)),
            group=da.from_array(sizes, chunks=(groups,)),
        )
        booster = model.booster_
    n = best_prefix(
        lambda n: booster.predict(Xv, num_iteration=n, raw_score=True),
        booster.current_iteration(),
        yv_grades,
        sizes_v,
        sc.early_stopping,
    )
    cut = lgb.Booster(model_str=booster.model_to_string(num_iteration=n))
    cut.best_iteration = n
    return cut


def fit_xgboost_dask(sc: XGBoostConfig, X, y, grades, sizes, Xv, yv_grades, sizes_v, obj) -> Any:
    import dask.array as da
    import xgboost as xgb
    import xgboost.dask  # noqa: F401  (the submodule is not imported by `import xgboost`)

    params = xgboost_params(sc, sc.dask.threads_per_worker)
    custom = sc.objective != "lambdarank"
    qid = np.repeat(np.arange(len(sizes)), sizes)
    with dask_client(sc) as client:
        rows, _ = partitions(sizes, max(1, len(client.scheduler_info()["workers"])))
        dtrain = xgb.dask.DaskDMatrix(
            client,
            da.from_array(X, chunks=(rows, X.shape[1])),
            da.from_array(y if custom else grades, chunks=(rows,)),
            qid=da.from_array(qid, chunks=(rows,)),
        )
        out = xgb.dask.train(
            client,
            params,
            dtrain,
            num_boost_round=sc.num_trees,
            obj=xgboost_objective(obj) if custom else None,
        )
    booster = out["booster"]
    dval = xgb.DMatrix(Xv)
    n = best_prefix(
        lambda n: booster.predict(dval, iteration_range=(0, n), output_margin=True),
        booster.num_boosted_rounds(),
        yv_grades,
        sizes_v,
        sc.early_stopping,
    )
    return booster[:n]
