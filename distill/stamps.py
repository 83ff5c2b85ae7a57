"""What each stage reads and writes (`Stage`, declared by the stage's own module), and skipping a stage whose
inputs and config have not changed since it last finished (`make demo` re-runs).

When a stage finishes, the record of what it read (`distill.ir.fingerprint.record`: its config and the content of
its inputs) is kept in `<workspace>/stamps/<stage>.json`. The stage is fresh when that record equals the current
one and its outputs are still in place (a folder written whole, a file present)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.ir import fingerprint
from distill.workspace import COMPLETE, Workspace, write_json_atomic


@dataclass(frozen=True)
class Stage:
    """A stage as its module declares it: how to run it, the config that decides its output, the files it reads
    (by name) and those it writes. `make demo` runs stages from these declarations and nothing else."""

    name: Callable[[Any], str]
    run: Callable[[Any], Any]
    config: Callable[[Any], list[Any]]
    inputs: Callable[[Any, Workspace], dict[str, Path]]
    outputs: Callable[[Any, Workspace], list[Path]]

    def record(self, cfg: Any, ws: Workspace) -> dict[str, Any]:
        return fingerprint.record(self.config(cfg), self.inputs(cfg, ws))


def data_config(cfg: Any) -> dict[str, Any]:
    """The dataset's options without its location: a dataset moved elsewhere is the same dataset (its content
    is an input of its own)."""
    from distill.config import to_container

    return {k: v for k, v in to_container(cfg.data).items() if k != "path"}


def _stamp(ws: Workspace, stage: str) -> Path:
    return ws.root / "stamps" / f"{stage}.json"


def changes(ws: Workspace, stage: str, current: dict[str, Any], outputs: list[Path]) -> list[str]:
    """What differs since `stage` last finished here (empty: it is fresh): config, inputs, missing outputs."""
    try:
        recorded = json.loads(_stamp(ws, stage).read_text())["record"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    missing = [
        str(o.relative_to(ws.root)) if ws.root in o.parents else str(o)
        for o in outputs
        if not ((o / COMPLETE).is_file() if o.is_dir() else o.is_file())
    ]
    return fingerprint.stale(recorded, current) + missing


def record(ws: Workspace, stage: str, current: dict[str, Any]) -> None:
    _stamp(ws, stage).parent.mkdir(exist_ok=True)
    write_json_atomic({"stage": stage, "record": current}, _stamp(ws, stage))
