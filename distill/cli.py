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

from distill.config import CONFIG_DIR, validate
from distill.errors import DistillError
from distill.schema import compose_config  # (importing it registers every schema before Hydra composes)
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


def explain(e: Exception) -> str:
    """One line for a composition error: the key and the options its schema knows, a missing group option and
    the available ones, or Hydra's own first line."""
    from hydra.errors import MissingConfigException

    from distill.config import omegaconf_error_line

    line = omegaconf_error_line(e.__cause__)
    if line:
        return line
    if isinstance(e, MissingConfigException):
        group = str(getattr(e, "config_name", "") or "").rpartition("/")[0]
        options = [o for o in (getattr(e, "options", None) or []) if not o.endswith("_schema")]
        return (
            f"{str(e).splitlines()[0]}; choose among {options}"
            if group or options
            else str(e).splitlines()[0]
        )
    return " ".join(str(e).split())


def check_overrides(argv: list[str]) -> None:
    """Compose the config with the command line's overrides before Hydra does, so that a misspelt key, a wrong
    type or an unknown group option is one line (exit 2) rather than Hydra's multi-line error (exit 1). A sweep
    (`a=1,2` with -m) is checked with its first value; flags and hydra.* overrides are Hydra's own."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [a for a in argv if not a.startswith("-") and not a.startswith("hydra.")]
    if not overrides or any(a in ("--help", "-h", "--hydra-help", "--info") for a in argv):
        return
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # Hydra's grammar errors
        fail(" ".join(str(e).split()))
        return
    first: list[str | None] = [
        f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"
        if o.is_sweep_override()
        else o.input_line
        for o in parsed
    ]
    multirun = any(a in ("-m", "--multirun") for a in argv)
    if not multirun and any(o.is_sweep_override() for o in parsed):
        first = list(overrides)  # without -m a sweep is an error: let compose name it
    try:
        compose_config([x for x in first if x is not None])
    except Exception as e:  # ConfigCompositionException, MissingConfigException, OmegaConf errors
        fail(explain(e))


def entry(run: Callable[[DictConfig], Any]) -> None:
    """Run `run(cfg)` under `@hydra.main`; a `DistillError`, an OS error the user can fix (disk full, read-only
    folder), or a command line that does not compose, prints `error: ...` on one line and exits with status 2."""
    check_overrides(sys.argv[1:])

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
