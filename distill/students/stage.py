"""`make train-student`: train the student that `student._target_` names (configs/student/<name>.yaml)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from distill.config import CONFIG_DIR
from distill.errors import ConfigError
from distill.students.base import load_callable


def run(cfg: DictConfig) -> Any:
    target = cfg.student.get("_target_") if cfg.student is not None else None
    if not target:
        raise ConfigError(
            "student has no _target_: choose a student with student=NAME (configs/student/NAME.yaml names the "
            "module that trains it, e.g. _target_: distill.students.gbdt.run)"
        )
    return load_callable(str(target), "student._target_")(cfg)


def student_config(name: str, overrides: Any = None, where: str = "student") -> DictConfig:
    """configs/student/<name>.yaml on the schema it names, as `student=<name>` composes it, then `overrides`;
    the schema's checks run here."""
    from hydra.core.config_store import ConfigStore

    path = CONFIG_DIR / "student" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"{where}: no student {name!r} ({path} does not exist); choose among {known}")
    node = OmegaConf.load(path)
    assert isinstance(node, DictConfig)
    schemas = [
        ConfigStore.instance().load(f"student/{d}.yaml").node
        for d in node.pop("defaults", [])
        if isinstance(d, str)
    ]
    merged = OmegaConf.merge(*schemas, node, overrides or {})
    assert isinstance(merged, DictConfig)
    OmegaConf.to_object(merged)  # range checks (__post_init__)
    return merged
