"""`make train-student`: train the student that `student._target_` names (configs/student/<name>.yaml)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from distill.config import load_callable
from distill.errors import ConfigError

__all__ = ["run"]


def run(cfg: DictConfig) -> Any:
    target = cfg.student.get("_target_") if cfg.student is not None else None
    if not target:
        raise ConfigError(
            "student has no _target_: choose a student with student=NAME (configs/student/NAME.yaml names the "
            "module that trains it, e.g. _target_: distill.students.gbdt.run)"
        )
    return load_callable(str(target), "student._target_")(cfg)
