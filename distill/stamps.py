"""Skip a stage whose inputs and config have not changed since it last finished (`make demo` re-runs).

A stage's key hashes the config it reads and the content fingerprints of the files it reads; when it finishes, the
key is recorded in `<workspace>/stamps/<stage>.json`. The stage is fresh when its recorded key equals the current
one and its outputs are still in place (a folder written whole, a file present)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from distill.config import to_container
from distill.workspace import COMPLETE, Workspace, fingerprint, write_json_atomic


def path_fingerprint(path: Path) -> str | None:
    """The identity of an input: a file's content hash; a folder's listing (relative path, size, modification
    time: a folder written again is new); None when it does not exist."""
    if path.is_file():
        return fingerprint(path)
    if not path.is_dir():
        return None
    listing = [
        [str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns]
        for p in sorted(path.rglob("*"))
        if p.is_file()
    ]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


def stage_key(config: list[Any], inputs: list[Path]) -> str:
    payload = {
        "config": [to_container(c) for c in config],
        "inputs": {str(p): path_fingerprint(p) for p in inputs},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _stamp(ws: Workspace, stage: str) -> Path:
    return ws.root / "stamps" / f"{stage}.json"


def is_fresh(ws: Workspace, stage: str, key: str, outputs: list[Path]) -> bool:
    f = _stamp(ws, stage)
    try:
        recorded = json.loads(f.read_text())["key"]
    except (OSError, ValueError, KeyError):
        return False
    return recorded == key and all((o / COMPLETE).is_file() if o.is_dir() else o.is_file() for o in outputs)


def record(ws: Workspace, stage: str, key: str) -> None:
    _stamp(ws, stage).parent.mkdir(exist_ok=True)
    write_json_atomic({"stage": stage, "key": key}, _stamp(ws, stage))
