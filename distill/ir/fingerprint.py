"""The one fingerprint: what an output was built from, by content, in one record format.

Every stage that must tell whether its output is stale, or whether an input is the one it was built from, uses
these functions and nothing else:

- `of_file(path)`: sha256 of the bytes (16 hex digits); each version of a file (path, inode, size, modification
  time) is hashed once per process, since stages compare the same inputs often.
- `of_folder(path)`: every file's relative path and content fingerprint (the project's own `.distill-*` markers
  left out, so a folder copied or re-marked keeps its identity); `patterns` restricts it to some files.
- `of_path(path)`: a file's or a folder's fingerprint; None when the path does not exist.
- `of_config(*nodes)`: the resolved config values, sorted, as JSON.
- `record(config, inputs)` / `stale(recorded, current)`: the record format every output carries (`{"config": ...,
  "inputs": {name: fingerprint}}`) and the names of what differs.

Fingerprints are of content, never of paths or times: a workspace copied or moved elsewhere keeps its identity.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

MARKER_PREFIX = ".distill-"
DIGITS = 16


def sha256_of_file(path: Path) -> str:
    """The full sha256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=4096)
def _of_version(path: str, inode: int, size: int, mtime_ns: int) -> str:
    return sha256_of_file(Path(path))


def of_file(path: Path) -> str:
    st = path.stat()
    return _of_version(str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)[:DIGITS]


def of_folder(path: Path, patterns: Iterable[str] = ("**/*",)) -> str:
    files = sorted({p for pat in patterns for p in path.glob(pat) if p.is_file()})
    h = hashlib.sha256()
    for p in files:
        rel = p.relative_to(path)
        if any(part.startswith(MARKER_PREFIX) for part in rel.parts):
            continue
        h.update(f"{rel.as_posix()}\0{of_file(p)}\0".encode())
    return h.hexdigest()[:DIGITS]


def of_path(path: Path) -> str | None:
    if path.is_file():
        return of_file(path)
    if path.is_dir():
        return of_folder(path)
    return None


def of_texts(texts: Iterable[str]) -> str:
    """The fingerprint of a sequence of texts (each one's bytes, in order), streamed."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:DIGITS]


def plain(node: Any) -> Any:
    """A config node (OmegaConf, dataclass or plain) as resolved plain Python values."""
    from dataclasses import asdict, is_dataclass

    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    if is_dataclass(node) and not isinstance(node, type):
        return asdict(node)
    return node


def of_config(*nodes: Any) -> str:
    payload = json.dumps([plain(n) for n in nodes], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:DIGITS]


def record(config: Iterable[Any] = (), inputs: Mapping[str, Path] | None = None) -> dict[str, Any]:
    """What an output was built from: the fingerprint of the config it read and of each named input."""
    return {
        "config": of_config(*config),
        "inputs": {name: of_path(p) for name, p in sorted((inputs or {}).items())},
    }


def stale(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[str]:
    """The names that differ between two records ("config" and the input names); an input only one side names
    counts as changed. No record at all: everything is stale."""
    if not recorded:
        return ["record"]
    out = ["config"] if recorded.get("config") != current.get("config") else []
    a, b = recorded.get("inputs") or {}, current.get("inputs") or {}
    return out + sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


__all__ = [
    "of_config",
    "of_file",
    "of_folder",
    "of_path",
    "of_texts",
    "plain",
    "record",
    "sha256_of_file",
    "stale",
]
