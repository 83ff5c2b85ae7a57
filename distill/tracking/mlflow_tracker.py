"""MLflow: a local store (SQLite under the workspace, artifacts beside it; no server needed to log). Each stage is
a run of the experiment named after the dataset, with the resolved config as parameters, metrics with slash keys
(`@` written `_at_`: MLflow's names allow letters, digits, `_ - . / :` and spaces), and the stage's outputs as
artifacts. `make dashboard ARGS="dashboard.backend=mlflow"` opens MLflow's UI on it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from distill.tracking import Run, Tracker, flat_params, sweep_id


def metric_name(key: str) -> str:
    return re.sub(r"[^0-9A-Za-z_\-./: ]", "_", key.replace("@", "_at_"))


class MlflowRun(Run):
    def __init__(self, client: Any, run_id: str):
        self.client = client
        self.run_id = run_id

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(metric_name(k), float(v), now, step or 0)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])

    def summary(self, metrics: dict[str, Any]) -> None:
        self.log(metrics)

    def artifact(self, path: Path, type: str, name: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path=name or path.name)
        elif path.is_file():
            self.client.log_artifact(self.run_id, str(path), artifact_path=type)

    def close(self) -> None:
        import mlflow

        if (active := mlflow.active_run()) is not None and active.info.run_id == self.run_id:
            mlflow.end_run()
        else:
            self.client.set_terminated(self.run_id)


class MlflowTracker(Tracker):
    report_to = "mlflow"

    def __init__(self, tracking_uri: str, experiment: str = "distill", artifact_location: str | None = None):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifact_location = artifact_location

    def open(self, cfg: Any, stage: str) -> Run:
        import mlflow
        from mlflow.entities import Param

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.tracking_uri)
        client = mlflow.MlflowClient(self.tracking_uri)
        exp = client.get_experiment_by_name(self.experiment)
        exp_id = (
            exp.experiment_id
            if exp is not None
            else client.create_experiment(
                self.experiment,
                artifact_location=Path(self.artifact_location).resolve().as_uri()
                if self.artifact_location
                else None,
            )
        )
        # the trainers' own MLflow callback logs into this run (it is the active one)
        tags = {"stage": stage} | ({"sweep": sweep} if (sweep := sweep_id()) else {})
        run = mlflow.start_run(experiment_id=exp_id, run_name=f"{cfg.data.name}-{stage}", tags=tags)
        params = [Param(k, str(v)[:6000]) for k, v in flat_params(cfg).items()]
        for i in range(0, len(params), 100):
            client.log_batch(run.info.run_id, params=params[i : i + 100])
        return MlflowRun(client, run.info.run_id)
