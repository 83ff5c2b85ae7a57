"""`make train-student`: dispatch on `student.name`."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from distill.errors import ConfigError


def run(cfg: DictConfig) -> Any:
    name = cfg.student.name
    if name in ("lightgbm", "xgboost"):
        from distill.students.gbdt import run as run_gbdt

        return run_gbdt(cfg)
    if name == "bi_encoder":
        from distill.students.bi_encoder import run as run_bi_encoder

        return run_bi_encoder(cfg)
    raise ConfigError(f"student={name!r}: use lightgbm, xgboost or bi_encoder")
