"""Weights & Biases: offline by default (runs under `<workspace>/wandb/`, no account; `wandb sync` uploads them
later, `wandb beta leet` shows them in a terminal), online after `wandb login` with `logger.wandb.mode=online`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from distill.config import to_container
from distill.errors import ConfigError
from distill.tracking import Run, Tracker

log = logging.getLogger(__name__)


class WandbRun(Run):
    def __init__(self, run: Any, mode: str):
        self.run = run
        self.mode = mode

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

    def close(self) -> None:
        self.run.finish()
        if self.mode == "offline":
            log.info(
                "wandb offline run saved under %s (upload: wandb sync %s)",
                self.run.dir,
                Path(self.run.dir).parent,
            )


class WandbTracker(Tracker):
    report_to = "wandb"

    def __init__(
        self,
        mode: str = "offline",
        project: str = "distill",
        entity: str | None = None,
        dir: str = ".",
        tags: list[str] | None = None,
    ):
        if mode not in ("offline", "online"):
            raise ConfigError(
                f"logger.wandb.mode={mode!r}: use offline or online (or logger=none for no tracking)"
            )
        self.mode, self.project, self.entity, self.dir, self.tags = (
            mode,
            project,
            entity,
            dir,
            list(tags or []),
        )

    def open(self, cfg: Any, stage: str) -> Run:
        import wandb

        Path(self.dir).mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=self.project,
            entity=self.entity,
            mode=self.mode,  # type: ignore[arg-type]
            dir=str(self.dir),
            job_type=stage,
            group=str(cfg.data.name),
            name=f"{cfg.data.name}-{stage}",
            tags=self.tags,
            config=to_container(cfg),
            reinit="finish_previous",
        )
        return WandbRun(run, self.mode)
