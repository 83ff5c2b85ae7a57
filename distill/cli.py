"""Thin Hydra entry points: compose the config, call a plain `run(cfg)`, turn user errors into one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig

from distill.config import CONFIG_DIR
from distill.errors import DistillError


def entry(run: Callable[[DictConfig], Any]) -> None:
    """Run `run(cfg)` under `@hydra.main`; a `DistillError` prints `error: ...` and exits with status 2."""

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
    def _main(cfg: DictConfig) -> Any:
        try:
            return run(cfg)
        except DistillError as e:
            logging.getLogger("distill").debug("user error", exc_info=True)
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    _main()
