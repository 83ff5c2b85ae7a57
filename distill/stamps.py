"""Skip a stage whose inputs and config have not changed since it last finished (`make demo` re-runs).

When a stage finishes, the record of what it read (`distill.ir.fingerprint.record`: its config and the content of
its inputs) is kept in `<workspace>/stamps/<stage>.json`. The stage is fresh when that record equals the current
one and its outputs are still in place (a folder written whole, a file present)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.ir import fingerprint
from distill.workspace import COMPLETE, Workspace, write_json_atomic


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
