"""`make train-student`: dispatch on `student.name`."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from distill.errors import ConfigError, StageNotReadyError


def run(cfg: DictConfig) -> Any:
    name = cfg.student.name
    if name in ("lightgbm", "xgboost"):
        from distill.students.gbdt import run as run_gbdt

        return run_gbdt(cfg)
    if name == "bi_encoder":
        raise StageNotReadyError("student=bi_encoder is not built yet")
    raise ConfigError(f"student={name!r}: use lightgbm or xgboost")
