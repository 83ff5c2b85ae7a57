"""`make demo`: the pipeline end to end on the configured data (default: the sample world).

data -> candidates -> train-teacher -> teacher-score -> features -> LightGBM and XGBoost students -> compare,
then prints the comparison table (also in `<workspace>/metrics.json`). Stages run in one process with the same
config; pass overrides as usual (`make demo ARGS="teacher.train.max_seconds=60"`).
"""

from __future__ import annotations

import time
from typing import Any

from omegaconf import DictConfig, open_dict

from distill.data.prepare import load_dataset
from distill.evaluation.compare import compare, table
from distill.features.build import run as run_features
from distill.retrieval.candidates import run as run_candidates
from distill.students.gbdt import run as run_gbdt
from distill.teacher.scoring import run as run_score
from distill.teacher.train import run as run_train_teacher
from distill.workspace import Workspace


def run(cfg: DictConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    timings = {}

    def stage(name, fn, c=cfg):
        t = time.perf_counter()
        fn(c)
        timings[name] = round(time.perf_counter() - t, 1)

    stage("candidates", run_candidates)
    stage("train-teacher", run_train_teacher)
    # the demo's teacher is the one it just trained; scoring starts fresh so old and new results never mix
    with open_dict(cfg):
        cfg.teacher.model = "trained"
        cfg.teacher.overwrite = True
    stage("teacher-score", run_score)
    stage("features", run_features)
    for name in ("lightgbm", "xgboost"):
        c = cfg.copy()
        with open_dict(c):
            c.student.name = name
        stage(f"train-student-{name}", run_gbdt, c)
    ws = Workspace.from_cfg(cfg)
    metrics = compare(load_dataset(cfg), ws)
    metrics["stage_seconds"] = timings
    print(
        f"\ndemo on {cfg.data.name} ({time.perf_counter() - t0:.0f}s; {timings})\n{table(metrics)}\n"
        f"-> {ws.metrics}"
    )
    return metrics
