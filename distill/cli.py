"""Thin Hydra entry points: compose the config, call a plain `run(cfg)`, turn user errors into one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

import distill.schema  # noqa: F401  (registers every schema before Hydra composes)
from distill.config import CONFIG_DIR, validate
from distill.errors import DistillError
from distill.workspace import user_os_error


def fail(message: str) -> None:
    """Print a user error on one line and exit with status 2."""
    logging.getLogger("distill").debug("user error", exc_info=True)
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


class CheckBeforeRun(Callback):
    """Hydra writes its run folder under paths.workspace before the stage starts: the config's values and the
    workspace are checked first, so a bad value or a workspace that is a file is one line, not Hydra's error."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)

    @staticmethod
    def _check(config: DictConfig) -> None:
        from distill.workspace import Workspace

        try:
            Workspace.check_root(Path(str(config.paths.workspace)))
            validate(config)
        except DistillError as e:
            fail(str(e))


def entry(run: Callable[[DictConfig], Any]) -> None:
    """Run `run(cfg)` under `@hydra.main`; a `DistillError`, or an OS error the user can fix (disk full, read-only
    folder), prints `error: ...` on one line and exits with status 2."""

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
    def _main(cfg: DictConfig) -> Any:
        try:  # the config was validated by CheckBeforeRun (configs/hydra/default.yaml)
            return run(cfg)
        except DistillError as e:
            fail(str(e))
        except OSError as e:
            line = user_os_error(e)
            if line is None:
                raise
            fail(line)

    _main()
