"""`make demo`: the pipeline end to end on the configured data (default: the sample world).

data -> candidates -> train-teacher -> teacher-score -> features -> the students of `demo.students` (each from
configs/student/<name>.yaml) -> LightGBM stacked on the students named in `demo.stack` -> evaluate (metrics.json, report.md with the cascade simulation), then prints the
comparison table. Stages run in one process with the same config; pass overrides as usual (`make demo
ARGS="teacher.train.max_seconds=60"`); `++demo.overrides.<name>.<key>=...` overrides a student's option. A re-run skips every stage
whose config and inputs (by content) are unchanged since it last finished (`distill/stamps.py`) and says so;
evaluation always runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from distill.config import CONFIG_DIR, check_known_keys, to_container
from distill.data.prepare import dataset_dir
from distill.errors import ConfigError, StageNotReadyError
from distill.evaluation.report import table
from distill.evaluation.stage import run as run_evaluate
from distill.features.build import run as run_features
from distill.ir import fingerprint
from distill.retrieval.candidates import run as run_candidates
from distill.stamps import changes, record
from distill.students.base import STUDENT_FILE, student_dirs
from distill.students.stage import run as run_student
from distill.teacher.scoring import run as run_score
from distill.teacher.train import run as run_train_teacher
from distill.workspace import Workspace, remove_ours


def run(cfg: DictConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    timings: dict[str, Any] = {}
    ws = Workspace.from_cfg(cfg)
    ds_dir = dataset_dir(cfg)

    def stage(
        name: str, fn, c: DictConfig, config: list[Any], inputs: list[Path], outputs: list[Path]
    ) -> None:
        """Run a stage unless its config and inputs are unchanged since it last finished here."""
        current = fingerprint.record(config, named(ws, inputs))
        if not changes(ws, name, current, outputs):
            print(f"demo: {name} skipped (its config and inputs are unchanged since it last ran here)")
            timings[name] = "skipped"
            return
        t = time.perf_counter()
        fn(c)
        record(ws, name, fingerprint.record(config, named(ws, inputs)))
        timings[name] = round(time.perf_counter() - t, 1)

    stage("candidates", run_candidates, cfg, [cfg.data, cfg.retrieval], [ds_dir], [ws.candidates])
    teacher = ws.model("teacher")
    stage(
        "train-teacher",
        run_train_teacher,
        cfg,
        [cfg.data, cfg.teacher.train],
        [ds_dir, ws.candidates],
        [teacher],
    )
    # the demo's teacher is the one it just trained; a new teacher is scored afresh, so results never mix
    score_cfg = cfg.copy()
    with open_dict(score_cfg):
        score_cfg.teacher.model = "trained"
        score_cfg.teacher.overwrite = True
    teacher_opts = {
        k: v for k, v in to_container(score_cfg.teacher).items() if k not in ("train", "overwrite")
    }
    stage(
        "teacher-score",
        run_score,
        score_cfg,
        [teacher_opts],
        [ws.candidates, teacher],
        [ws.soft_labels / "manifest.json"],
    )
    stage(
        "features",
        run_features,
        cfg,
        [cfg.data, cfg.retrieval, cfg.features],
        [ds_dir, ws.candidates],
        [ws.features],
    )
    learned_from = [ws.candidates, ws.soft_labels / "manifest.json", ws.features, teacher]
    for name in cfg.demo.students:
        c = cfg.copy()
        with open_dict(c):
            c.student = student_config(name, cfg.demo.overrides.get(name), f"demo.students[{name}]")
        stage(
            f"train-student-{name}",
            run_student,
            c,
            [c.student, cfg.data],
            learned_from,
            trained_folders(ws, str(c.student.name)),
        )
    if cfg.demo.stack:
        c = cfg.copy()
        with open_dict(c):
            c.student = student_config("lightgbm", cfg.demo.overrides.get("lightgbm"), "demo.stack")
            c.features.students = list(cfg.demo.stack)
        stage(
            "train-student-lightgbm_stack",
            run_student,
            c,
            [c.student, cfg.data, list(cfg.demo.stack)],
            learned_from + stacked_folders(ws, list(cfg.demo.stack)),
            trained_folders(ws, "lightgbm_stack"),
        )
    remove_stale_students(ws)
    metrics = run_evaluate(cfg)
    metrics["stage_seconds"] = timings
    print(
        f"\ndemo on {cfg.data.name} ({time.perf_counter() - t0:.0f}s; {timings})\n{table(metrics)}\n-> {ws.report}"
    )
    return metrics


def student_config(name: str, overrides: Any, where: str) -> DictConfig:
    """configs/student/<name>.yaml as `student=<name>` composes it (Hydra's compose API, on its schema), then
    `overrides`, checked."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    path = CONFIG_DIR / "student" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"{where}: no student {name!r} ({path} does not exist); choose among {known}")
    if GlobalHydra.instance().is_initialized():  # inside @hydra.main
        node = compose("config", overrides=[f"student={name}"]).student
    else:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            node = compose("config", overrides=[f"student={name}"]).student
    merged = OmegaConf.merge(node, overrides or {})
    assert isinstance(merged, DictConfig)
    check_known_keys(merged, f"demo.overrides.{name}")
    OmegaConf.to_object(merged)  # the schema's value checks
    return merged


def named(ws: Workspace, paths: list[Path]) -> dict[str, Path]:
    """Inputs by a name that survives moving the workspace: the path inside it, else the folder's name."""
    return {(str(p.relative_to(ws.root)) if ws.root in p.parents else p.name): p for p in paths}


def trained_folders(ws: Workspace, name: str) -> list[Path]:
    """The model folders a student of this name has written (models/<name>/ or models/<name>/<loss>/); the bare
    folder when there is none yet (so the stage is not fresh)."""
    root = ws.model(name)
    return [d for d in student_dirs(ws) if d == root or root in d.parents] or [root]


def stacked_folders(ws: Workspace, names: list[str]) -> list[Path]:
    """The folders of the students a stack reads (a ranker name starts with its folder's student name)."""
    return [
        d
        for d in student_dirs(ws)
        if any(n.startswith(str(json.loads((d / STUDENT_FILE).read_text())["name"])) for n in names)
    ]


def remove_stale_students(ws: Workspace) -> None:
    """Students left from earlier runs that learned from other candidates or soft labels would make evaluation
    refuse to mix results: the demo removes them (folders it made) and says so."""
    for model_dir in student_dirs(ws):
        recorded = json.loads((model_dir / STUDENT_FILE).read_text()).get("inputs")
        try:
            ws.check_inputs(model_dir, recorded, "")
        except StageNotReadyError:
            remove_ours(model_dir)
            print(f"demo: removed {model_dir} (trained on other inputs than the workspace holds now)")
