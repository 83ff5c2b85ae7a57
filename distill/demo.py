"""`make demo`: the pipeline end to end on the configured data (default: the sample world).

data -> candidates -> train-teacher -> teacher-score -> features -> the students of `demo.students` (each from
configs/student/<name>.yaml) -> LightGBM stacked on the students named in `demo.stack` -> evaluate (metrics.json, report.md with the cascade simulation), then prints the
comparison table. Stages run in one process with the same config; pass overrides as usual (`make demo
ARGS="teacher.train.max_seconds=60"`); `++demo.overrides.<name>.<key>=...` overrides a student's option. A re-run skips every stage
whose config and inputs (by content) are unchanged since it last finished (`distill/stamps.py`) and says so;
evaluation always runs.
"""

from __future__ import annotations

import time
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigKeyError, ValidationError

from distill.config import CONFIG_DIR, check_known_keys, omegaconf_error_line, to_container
from distill.data.prepare import dataset_dir
from distill.errors import ConfigError, StageNotReadyError
from distill.evaluation.report import table
from distill.evaluation.stage import run as run_evaluate
from distill.features.build import STAGE as FEATURES
from distill.retrieval.candidates import STAGE as CANDIDATES
from distill.stamps import Stage, changes, record
from distill.students.base import student_dirs, student_meta
from distill.students.stage import STAGE as TRAIN_STUDENT
from distill.teacher.scoring import STAGE as TEACHER_SCORE
from distill.teacher.scoring import teacher_names
from distill.teacher.train import STAGE as TRAIN_TEACHER
from distill.workspace import Workspace, remove_ours


def plan(cfg: DictConfig) -> list[tuple[Stage, DictConfig]]:
    """The stages of the demo and the config each runs with: candidates, train-teacher (only when the teacher is
    the workspace's own, `teacher.model=trained`), teacher-score (afresh for a new teacher: results never mix),
    features, the students of `demo.students`, the stacked LightGBM of `demo.stack`."""
    steps: list[tuple[Stage, DictConfig]] = [(CANDIDATES, cfg)]
    if teacher_names(cfg) == ["trained"]:
        steps.append((TRAIN_TEACHER, cfg))
    score_cfg = cfg.copy()
    with open_dict(score_cfg):
        score_cfg.teacher.overwrite = True
    steps += [(TEACHER_SCORE, score_cfg), (FEATURES, cfg)]
    for name in cfg.demo.students:
        c = cfg.copy()
        with open_dict(c):
            c.student = student_config(name, cfg.demo.overrides.get(name), f"demo.students[{name}]")
            c.features.students = []
        steps.append((TRAIN_STUDENT, c))
    if cfg.demo.stack:
        c = cfg.copy()
        with open_dict(c):
            # plain copies: the composed nodes are in struct mode, which refuses a key only one of them has
            over = OmegaConf.merge(
                to_container(cfg.demo.overrides.get("lightgbm")) or {},
                to_container(cfg.demo.stack_overrides) or {},
            )
            c.student = student_config("lightgbm", over, "demo.stack", "demo.stack_overrides")
            c.features.students = list(cfg.demo.stack)
        steps.append((TRAIN_STUDENT, c))
    return steps


def run(cfg: DictConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    timings: dict[str, Any] = {}
    ws = Workspace.from_cfg(cfg)
    dataset_dir(cfg)
    for stage, c in plan(cfg):
        name = stage.name(c)
        if not changes(ws, name, stage.record(c, ws), stage.outputs(c, ws)):
            print(f"demo: {name} skipped (its config and inputs are unchanged since it last ran here)")
            timings[name] = "skipped"
            continue
        t = time.perf_counter()
        stage.run(c)
        record(ws, name, stage.record(c, ws))
        timings[name] = round(time.perf_counter() - t, 1)
    remove_stale_students(ws)
    metrics = run_evaluate(cfg)
    metrics["stage_seconds"] = timings
    print(
        f"\ndemo on {cfg.data.name} ({time.perf_counter() - t0:.0f}s; {timings})\n{table(metrics)}\n-> {ws.report}"
    )
    return metrics


def student_config(name: str, overrides: Any, where: str, key: str | None = None) -> DictConfig:
    """configs/student/<name>.yaml as `student=<name>` composes it (Hydra's compose API, on its schema), then
    `overrides` (the config key `key` names them in errors; default demo.overrides.<name>), checked."""
    from distill.schema import compose_config

    path = CONFIG_DIR / "student" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"{where}: no student {name!r} ({path} does not exist); choose among {known}")
    node = compose_config([f"student={name}"]).student
    key = key or f"demo.overrides.{name}"
    try:
        merged = OmegaConf.merge(node, overrides or {})
    except (ConfigKeyError, ValidationError) as e:  # the key under `key`, not under the composed `student`
        line = omegaconf_error_line(e) or f"student: {str(e).splitlines()[0]}"
        raise ConfigError(f"{key}{line.removeprefix('student')}") from e
    assert isinstance(merged, DictConfig)
    check_known_keys(merged, key)
    OmegaConf.to_object(merged)  # the schema's value checks
    return merged


def remove_stale_students(ws: Workspace) -> None:
    """Students left from earlier runs that learned from other candidates or soft labels would make evaluation
    refuse to mix results: the demo removes them (folders it made) and says so."""
    for model_dir in student_dirs(ws):
        recorded = student_meta(model_dir).get("inputs")
        try:
            ws.check_inputs(model_dir, recorded, "")
        except StageNotReadyError:
            remove_ours(model_dir)
            print(f"demo: removed {model_dir} (trained on other inputs than the workspace holds now)")
