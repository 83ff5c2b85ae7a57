"""`make demo`: the pipeline end to end on the configured data (default: the sample world).

data -> candidates -> train-teacher -> teacher-score -> features -> LightGBM, XGBoost and bi-encoder students ->
evaluate (metrics.json, report.md with the cascade simulation), then prints the comparison table. Stages run in
one process with the same config; pass overrides as usual (`make demo ARGS="teacher.train.max_seconds=60"`);
`demo.bi_encoder.*` overrides the bi-encoder student (configs/student/bi_encoder.yaml).
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from distill.config import CONFIG_DIR
from distill.evaluation.stage import run as run_evaluate
from distill.evaluation.stage import table
from distill.features.build import run as run_features
from distill.retrieval.candidates import run as run_candidates
from distill.students.bi_encoder import run as run_bi_encoder
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

    ws = Workspace.from_cfg(cfg)
    # a new teacher makes every student stale: start the students and the report afresh
    for old in [ws.model("lightgbm"), ws.model("xgboost"), ws.model("bi_encoder"), ws.metrics, ws.report]:
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
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
    c = cfg.copy()
    bi = OmegaConf.merge(
        OmegaConf.load(CONFIG_DIR / "student" / "bi_encoder.yaml"), cfg.demo.get("bi_encoder", {})
    )
    with open_dict(c):
        c.student = bi
    stage("train-student-bi_encoder", run_bi_encoder, c)
    metrics = run_evaluate(cfg)
    metrics["stage_seconds"] = timings
    print(
        f"\ndemo on {cfg.data.name} ({time.perf_counter() - t0:.0f}s; {timings})\n{table(metrics)}\n-> {ws.report}"
    )
    return metrics
