"""Library parameters of the GBDT students, shared by the one-machine and the Dask fits."""

from __future__ import annotations

from typing import Any

from distill.students.schema import XGBoostConfig


def xgboost_params(sc: XGBoostConfig, threads: int) -> dict[str, Any]:
    """XGBoost's parameters for a student (one machine or Dask); lambdarank uses XGBoost's own rank:ndcg."""
    params: dict[str, Any] = sc.library_params() | {
        "eta": sc.learning_rate,
        "nthread": threads,
        "seed": sc.seed,
    }
    if sc.objective == "lambdarank":
        params.update(objective="rank:ndcg", ndcg_exp_gain=True)
    return params
