"""Experiment tracking through any number of backends, each chosen by `_target_` in `configs/logger/<name>.yaml`.

    with start_run(cfg, stage="candidates") as run:
        run.log({"test/ndcg@10": 0.41})
        run.summary({"test/ndcg@10": 0.41})
        run.artifact(path, type="dataset")

`logger=[wandb,tensorboard]` (the default), `logger=mlflow`, `logger=none`: each selected YAML adds one entry under
`logger.<name>` holding its tracker's `_target_` and options (the lightning-hydra-template layout), and every
stage's run goes to all of them. A backend is one small `Tracker` subclass (its `open(cfg, stage)` returns a
`Run`, its `report_to` is the Hugging Face trainers' name for it) plus one YAML. Only the main process of a
multi-process launch tracks.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.utils import instantiate

from distill.config import to_container
from distill.distributed import process_ranks
from distill.errors import ConfigError, DistillError


class Run:
    """One stage's run in one backend; this base class records nothing (`logger=none`)."""

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def artifact(self, path: Path, type: str, name: str | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class Tracker:
    """A backend. `report_to`: the Hugging Face trainers' `report_to` name, so their loss curves land there too."""

    report_to: str | None = None

    def open(self, cfg: Any, stage: str) -> Run:
        return Run()

    def trainer_logging_dir(self, cfg: Any, run: str) -> str | None:
        """Where the trainers' own logger writes for trainer run `run` (TensorBoard); None: no folder needed."""
        return None


class FanOut(Run):
    """Every call to each backend's run."""

    def __init__(self, runs: list[Run]):
        self.runs = runs

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        for r in self.runs:
            r.log(metrics, step)

    def summary(self, metrics: dict[str, Any]) -> None:
        for r in self.runs:
            r.summary(metrics)

    def artifact(self, path: Path, type: str, name: str | None = None) -> None:
        for r in self.runs:
            r.artifact(path, type, name)

    def close(self) -> None:
        for r in self.runs:
            r.close()


def trackers(cfg: Any) -> list[Tracker]:
    """The configured backends (none on the other ranks of a multi-process launch)."""
    node = cfg.get("logger") if hasattr(cfg, "get") else None
    if not node or not process_ranks().is_main:
        return []
    out = []
    for key, spec in to_container(node).items():
        if not spec:
            continue
        if not isinstance(spec, dict) or not spec.get("_target_"):
            raise ConfigError(
                f"logger.{key} has no _target_: a logger YAML holds `{key}: {{_target_: module.Class, ...}}` "
                "(see configs/logger/)"
            )
        try:
            tracker = instantiate(spec)
        except Exception as e:  # Hydra's InstantiationException: an import or a constructor's argument
            if isinstance(e.__cause__, DistillError):  # the tracker's own check of its options
                raise e.__cause__ from None
            if "Error locating target" in str(e):
                raise ConfigError(f"logger.{key}._target_: cannot import {spec['_target_']!r}") from e
            raise ConfigError(f"logger.{key}: {' '.join(str(e).split())[:300]}") from e
        if not isinstance(tracker, Tracker):
            raise ConfigError(f"logger.{key}._target_={spec['_target_']!r} is not a distill.tracking.Tracker")
        out.append(tracker)
    return out


def run_name(cfg: Any, stage: str) -> str:
    """`<data>-<stage>-<time>`: unique per run, sorted by time, so a sweep's runs sit side by side."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")[:-3]
    return f"{cfg.data.name}-{stage}-{stamp}"


def flat_params(cfg: Any) -> dict[str, Any]:
    """The resolved config as dotted keys with scalar values (lists joined), for backends' parameter tables."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        elif isinstance(node, list):
            out[prefix[:-1]] = ",".join(map(str, node))
        else:
            out[prefix[:-1]] = node

    walk(to_container(cfg), "")
    return {k: v for k, v in out.items() if not k.startswith("logger.")}


def sweep_overrides() -> dict[str, str]:
    """The command line's overrides of this Hydra job (a sweep's varied parameters), when run under Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        task = HydraConfig.get().overrides.task
    except (ImportError, ValueError):
        return {}
    pairs = dict(o.lstrip("+").split("=", 1) for o in task if "=" in o)
    return {k: v for k, v in pairs.items() if not k.startswith(("logger", "paths", "hydra", "dashboard"))}


def sweep_id() -> str | None:
    """The folder of the Hydra multirun this job belongs to (its sibling runs share it), else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return None
    return str(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None


@contextlib.contextmanager
def start_run(cfg: Any, stage: str) -> Iterator[Run]:
    """A run of `stage` in every configured backend, closed when the block ends (also on an error)."""
    runs = [t.open(cfg, stage) for t in trackers(cfg)]
    fan = FanOut(runs)
    try:
        yield fan
    finally:
        fan.close()


def report_to(cfg: Any) -> list[str]:
    """The Hugging Face trainers' `report_to`: the backends they log to themselves (none: `[]`)."""
    return trainer_logging(cfg, "")[0]


def trainer_logging(cfg: Any, run: str) -> tuple[list[str], str | None]:
    """What the Hugging Face trainers need for trainer run `run`: their `report_to` list and the folder their
    TensorBoard callback writes to (None: no TensorBoard backend)."""
    backends = trackers(cfg)
    folders = [d for t in backends if (d := t.trainer_logging_dir(cfg, run))]
    return [t.report_to for t in backends if t.report_to], folders[0] if folders else None


os.environ.setdefault("WANDB_SILENT", "true")

__all__ = ["FanOut", "Run", "Tracker", "report_to", "start_run", "trackers"]
