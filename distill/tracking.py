"""Experiment tracking: wandb (offline by default, no account needed) or nothing.

    with start_run(cfg, stage="candidates") as run:
        run.log({"test/ndcg@10": 0.41})
        run.artifact(path, type="dataset")

Offline runs are written under `<workspace>/wandb/`; `wandb sync <that folder>/offline-run-*` uploads them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distill.config import to_container
from distill.distributed import process_ranks
from distill.errors import ConfigError

log = logging.getLogger(__name__)


class NullRun:
    """Tracking switched off (`logger=none`)."""

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def artifact(self, path: Path, type: str, name: str | None = None) -> None:
        pass


class WandbRun(NullRun):
    def __init__(self, run: Any):
        self.run = run

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.run.log(metrics, step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        self.run.summary.update(metrics)

    def artifact(self, path: Path, type: str, name: str | None = None) -> None:
        import wandb

        art = wandb.Artifact(
            name or f"{self.run.group or 'run'}-{Path(path).name}".replace("/", "-"), type=type
        )
        if Path(path).is_dir():
            art.add_dir(str(path))
        else:
            art.add_file(str(path))
        self.run.log_artifact(art)


@contextlib.contextmanager
def start_run(cfg: Any, stage: str) -> Iterator[NullRun]:
    """A tracking run for `stage`; nothing is tracked by the other ranks of a multi-process launch."""
    lc = cfg.logger
    if lc.backend == "none" or lc.mode == "disabled" or not process_ranks().is_main:
        yield NullRun()
        return
    if lc.backend != "wandb":
        raise ConfigError(f"logger.backend={lc.backend!r}: use wandb or none (logger=none)")
    if lc.mode not in ("offline", "online"):
        raise ConfigError(f"logger.mode={lc.mode!r}: use offline, online or disabled")
    import wandb

    Path(lc.dir).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(
        project=lc.project,
        entity=lc.entity,
        mode=lc.mode,
        dir=str(lc.dir),
        job_type=stage,
        group=str(cfg.data.name),
        name=f"{cfg.data.name}-{stage}",
        tags=list(lc.tags),
        config=to_container(cfg),
        reinit="finish_previous",
    )
    try:
        yield WandbRun(run)
    finally:
        run.finish()
        if lc.mode == "offline":
            log.info(
                "wandb offline run saved under %s (upload: wandb sync %s)", run.dir, Path(run.dir).parent
            )
