"""Library parameters of the GBDT students, shared by the one-machine and the Dask fits."""

from __future__ import annotations

from typing import Any

from distill.config import GBDTConfig


def xgboost_params(sc: GBDTConfig, threads: int) -> dict[str, Any]:
    """XGBoost's parameters for a student (one machine or Dask); lambdarank uses XGBoost's own rank:ndcg."""
    params: dict[str, Any] = {
        "eta": sc.learning_rate,
        "max_depth": sc.max_depth,
        "nthread": threads,
        "seed": sc.seed,
        "min_child_weight": 1e-3,
    }
    if sc.objective == "lambdarank":
        params.update(objective="rank:ndcg", ndcg_exp_gain=True)
    return params
