"""`make train-student`: train the student that `student._target_` names (configs/student/<name>.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from distill.config import load_callable, to_container
from distill.data.prepare import dataset_dir
from distill.errors import ConfigError
from distill.stamps import Stage, data_config
from distill.students.base import student_dirs, student_meta
from distill.workspace import Workspace

__all__ = ["run"]


def run(cfg: DictConfig) -> Any:
    target = cfg.student.get("_target_") if cfg.student is not None else None
    if not target:
        raise ConfigError(
            "student has no _target_: choose a student with student=NAME (configs/student/NAME.yaml names the "
            "module that trains it, e.g. _target_: distill.students.gbdt.run)"
        )
    return load_callable(str(target), "student._target_")(cfg)


def _reads(cfg: DictConfig) -> set[str]:
    """What the configured student reads beyond candidates and soft labels (its schema says: `READS`)."""
    kind = OmegaConf.get_type(cfg.student) if isinstance(cfg.student, DictConfig) else None
    reads: frozenset[str] = getattr(kind, "READS", frozenset())
    base = str(cfg.student.get("base_model") or "")
    return set(reads) | ({"teacher"} if base in ("teacher", "scratch", "static") else set())


def _inputs(cfg: DictConfig, ws: Workspace) -> dict[str, Path]:
    reads = _reads(cfg)
    out = ws.learned_from() | {"dataset": dataset_dir(cfg)}
    if "features" in reads:
        out["features"] = ws.features
    if "teacher" in reads:
        name = str(cfg.teacher.model)
        folder = ws.model("teacher") if name == "trained" else Path(name)
        if folder.exists():  # a hub id is identified by its name, in the config
            out["teacher"] = folder
    for d in stacked_folders(ws, list(cfg.features.get("students") or [])):
        out[f"stacked:{d.relative_to(ws.root)}"] = d
    return out


def folder_name(cfg: DictConfig) -> str:
    """The model folder a student of this config writes (a GBDT stacked on students: `<name>_stack`)."""
    return str(cfg.student.name) + ("_stack" if cfg.features.get("students") else "")


def trained_folders(ws: Workspace, name: str) -> list[Path]:
    """The model folders a student of this name has written (models/<name>/ or models/<name>/<loss>/); the bare
    folder when there is none yet (so the stage is not fresh)."""
    root = ws.model(name)
    return [d for d in student_dirs(ws) if d == root or root in d.parents] or [root]


def stacked_folders(ws: Workspace, names: list[str]) -> list[Path]:
    """The folders of the students a stack reads (a ranker name starts with its folder's student name)."""
    return [d for d in student_dirs(ws) if any(n.startswith(str(student_meta(d)["name"])) for n in names)]


STAGE = Stage(
    name=lambda cfg: f"train-student-{folder_name(cfg)}",
    run=run,
    config=lambda cfg: [
        to_container(cfg.student),
        data_config(cfg),
        list(cfg.features.get("students") or []),
        # a lexical start is built as teacher.train builds the teacher's (distill.students.cross_encoder)
        *([to_container(cfg.teacher.train)] if cfg.student.get("base_model") == "lexical" else []),
    ],
    inputs=_inputs,
    outputs=lambda cfg, ws: trained_folders(ws, folder_name(cfg)),
)
