"""The workspace folder through which stages exchange files, with fixed names (see README, "Pipeline"), and the
rules every output follows: written whole (a temp sibling renamed into place), fingerprinted by content, and
removed only when the project made it."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from distill.errors import ConfigError, DataError, StageNotReadyError
from distill.faults import kill_point
from distill.ir import fingerprint

# A folder the project wrote whole carries this file: what it holds (relative path -> size in bytes).
COMPLETE = ".distill-complete.json"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def from_cfg(cls, cfg: Any) -> Workspace:
        from distill.config import validate

        validate(cfg)
        root = Path(cfg.paths.workspace).resolve()
        cls.check_root(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"paths.workspace={root}: cannot create it ({e.strerror})") from e
        if not os.access(root, os.W_OK):
            raise ConfigError(f"paths.workspace={root} is not writable: choose a writable folder")
        return cls(root)

    @staticmethod
    def check_root(root: Path) -> None:
        """A workspace must be a folder (or not exist yet), and so must every folder above it."""
        root = root.resolve()
        for p in (root, *root.parents):
            if p.exists() and not p.is_dir():
                raise ConfigError(
                    f"paths.workspace={root} is a file, not a folder: point paths.workspace at a folder"
                    if p == root
                    else f"paths.workspace={root}: {p} is a file, not a folder"
                )

    @property
    def candidates(self) -> Path:
        return self.root / "candidates.parquet"

    @property
    def soft_labels(self) -> Path:
        return self.root / "soft_labels"

    @property
    def features(self) -> Path:
        return self.root / "features.parquet"

    @property
    def candidates_record(self) -> Path:
        """What candidates.parquet was built from (its dataset folder and config), written by `make candidates`."""
        return self.root / "candidates.record.json"

    @property
    def candidates_metrics(self) -> Path:
        """BM25's own quality on each split, written by `make candidates`."""
        return self.root / "candidates_metrics.json"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def runs(self, stage: str) -> Path:
        """The Hugging Face trainers' output folder of a stage."""
        return self.root / "runs" / stage

    @property
    def teacher_init(self) -> Path:
        """The from-scratch teacher before training (built once, shared by DDP ranks)."""
        return self.root / "models" / "teacher_init"

    @property
    def features_record(self) -> Path:
        """What features.parquet was built from (`distill.features.build.features_record`)."""
        return self.root / "features.record.json"

    def learned_from(self, features: bool = False) -> dict[str, Path]:
        """The workspace files a student learns from (what its folder records, `fingerprint.record`): the
        candidates, the soft-label manifest (which lists every part's checksum) and, for students on features,
        features.parquet."""
        out = {"candidates": self.require(self.candidates, "candidates")}
        if (self.soft_labels / "manifest.json").is_file():
            out["soft_labels"] = self.soft_labels / "manifest.json"
        if features:
            out["features"] = self.require(self.features, "features")
        return out

    def check_inputs(self, model_dir: Path, recorded: dict[str, str] | None, remedy: str) -> None:
        """Refuse a model whose recorded inputs (`fingerprint.record(...)["inputs"]`) differ from the files the
        workspace holds now."""
        if not recorded:
            return
        names = {k: p for k, p in self.learned_from().items()} | {"features": self.features}
        now = fingerprint.record(inputs={k: names[k] for k in recorded if k in names})["inputs"]
        changed = [k for k in fingerprint.stale({"inputs": recorded}, {"inputs": now}) if k in names]
        if changed:
            raise StageNotReadyError(
                f"{model_dir} is stale: it was trained on other {' and '.join(s.replace('_', ' ') for s in changed)} "
                f"than the workspace holds now; {remedy}"
            )

    def student_scores(self, name: str) -> Path:
        """A stacked student's cached scores of every candidate (distill/students/stacking.py)."""
        return self.root / "student_scores" / f"{name}.parquet"

    def model(self, name: str) -> Path:
        return self.root / "models" / name

    @property
    def exports(self) -> Path:
        """`make export`'s graphs, one folder per student and kind (distill/export)."""
        return self.root / "exports"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    def require(self, path: Path, stage: str) -> Path:
        """`path`, or a clear error saying which stage produces it."""
        if not path.exists():
            raise StageNotReadyError(
                f"{path} not found: run `make {stage}` first (with the same data= and "
                f"paths.workspace= overrides)"
            )
        return path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temp sibling of `path` to write; renamed onto `path` when the body succeeds, removed when it fails (a
    full disk leaves no partial file behind, and the previous `path` intact)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_parquet_atomic(df: pd.DataFrame, path: Path, **kwargs: Any) -> None:
    """Write to a temp file and rename, so readers never see a half-written file."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False, **kwargs)


def release_arrow_memory() -> None:
    """Hand the Arrow memory pool's freed buffers back to the system: a reader that goes through a file a row group
    at a time would otherwise keep the pool's high-water mark (the allocator holds what it freed). With the C
    library's allocator as Arrow's pool (`distill/__init__.py`), Arrow does this with glibc's `malloc_trim`, which
    hands back what NumPy and Python freed too."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def write_text_atomic(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(obj: Any, path: Path) -> None:
    """JSON as the standard reads it: a NaN or infinity anywhere is refused (naming where), never written."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, default=str, allow_nan=False)
    except ValueError as e:
        raise DataError(
            f"{path}: {_non_finite(obj) or 'a value'} is not a finite number; nothing was written"
        ) from e
    write_text_atomic(text, path)


def _non_finite(obj: Any, where: str = "") -> str | None:
    import math

    if isinstance(obj, float) and not math.isfinite(obj):
        return where or "the value"
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else []
    for k, v in items:
        found = _non_finite(v, f"{where}.{k}" if where else str(k))
        if found:
            return found
    return None


def _listing(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != COMPLETE
    }


def is_ours(path: Path) -> bool:
    """Whether the project made this folder: it carries one of the project's `.distill-*` markers (the completion
    marker, the build marker of a folder being written, a dataset's source stamp)."""
    return any(path.glob(".distill-*"))


def remove_ours(path: Path, what: str = "folder") -> None:
    """Delete a folder the project made; refuse, naming it, to delete anything else."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink() and (is_ours(path) or not any(path.iterdir())):
        shutil.rmtree(path)
        return
    raise ConfigError(
        f"{path} exists and was not made by distill (no {COMPLETE}); it is left untouched: move it away or "
        f"choose another {what}"
    )


def check_not_linked_out(path: Path, root: Path, what: str) -> None:
    """Refuse an output folder that is a symbolic link, or lies outside `root` once links are resolved: the
    project writes and deletes only inside the workspace (and data/), never through a link to elsewhere."""
    if path.is_symlink() or (path.exists() and root.resolve() not in path.resolve().parents):
        raise ConfigError(
            f"{path} is a symbolic link to {path.resolve()}: {what} is written and cleaned inside the workspace "
            f"only; remove the link, or put the whole workspace on the other disk (paths.workspace=DIR)"
        )


@contextlib.contextmanager
def exclusive(dest: Path, what: str) -> Iterator[None]:
    """Hold `dest`'s write lock (`.<name>.lock` beside it; released when this process ends, even by a crash), or
    refuse in one line when another process holds it."""
    from filelock import FileLock, Timeout

    key = str(dest.resolve())
    if key in _HELD:  # this process holds it already (a stage that locks its output for the whole run)
        yield
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(dest.with_name(f".{dest.name}.lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout as e:
        raise ConfigError(
            f"another process is writing {dest} right now ({what}); wait for it to finish, or write elsewhere"
        ) from e
    _HELD.add(key)
    try:
        yield
    finally:
        _HELD.discard(key)
        lock.release()


_HELD: set[str] = set()


@contextlib.contextmanager
def staged_dir(dest: Path, what: str = "folder") -> Iterator[Path]:
    """Write a folder as a whole: the body fills a temp sibling; on success a completion marker listing every file
    and its size is added and the folder replaces `dest` (the old one is moved aside, then removed). A crash
    before that leaves the previous `dest` as it was; a crash between the two renames is repaired by the next call
    (or by `check_complete`). An existing `dest` the project did not make is never replaced: the error names it
    and `what` to change. One process at a time writes a given `dest` (`exclusive`): a second is refused."""
    with exclusive(dest, what), _staged(dest, what) as tmp:
        yield tmp


@contextlib.contextmanager
def _staged(dest: Path, what: str) -> Iterator[Path]:
    tmp, old = dest.with_name(f".{dest.name}.tmp"), dest.with_name(f".{dest.name}.old")
    _restore(dest, old)
    if dest.exists() and not is_ours(dest):
        remove_ours(dest, what)  # removes an empty folder, refuses anything else (before any work is done)
    if tmp.exists():
        remove_ours(tmp)
    tmp.mkdir(parents=True)
    (tmp / ".distill-building").touch()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / ".distill-building").unlink()
    write_json_atomic({"files": _listing(tmp)}, tmp / COMPLETE)
    kill_point("staged_written")
    if dest.exists():
        dest.rename(old)
    kill_point("staged_between_renames")
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def _restore(dest: Path, old: Path) -> None:
    if not dest.exists() and (old / COMPLETE).is_file():
        old.rename(dest)


def check_complete(folder: Path, remedy: str) -> Path:
    """`folder`, if it was written whole and no file in it is missing or truncated; else a one-line error that
    says how to rebuild it (`remedy`)."""
    _restore(folder, folder.with_name(f".{folder.name}.old"))
    marker = folder / COMPLETE
    if not marker.is_file():
        what = (
            "not found"
            if not folder.exists()
            else f"incomplete (no {COMPLETE}: interrupted or not written by distill)"
        )
        raise StageNotReadyError(f"{folder} is {what}: {remedy}")
    try:
        files = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{marker} is damaged: {remedy}") from e
    for rel, size in files.items():
        f = folder / rel
        if not f.is_file() or f.stat().st_size != size:
            state = "missing" if not f.is_file() else f"{f.stat().st_size} bytes instead of {size}"
            raise DataError(f"{f} is damaged ({state}): {remedy}")
    return folder


def user_os_error(e: OSError) -> str | None:
    """One line for an OS error a user can fix (disk full, read-only or missing folder), or None."""
    hints = {
        errno.ENOSPC: "the disk is full: free some space (or point paths.workspace elsewhere) and re-run; "
        "finished work is kept and the stage resumes",
        errno.EDQUOT: "the disk quota is exceeded: free some space and re-run",
        errno.EROFS: "the file system is read-only: point paths.workspace at a writable folder",
        errno.EACCES: "permission denied: point paths.workspace at a folder you can write",
        errno.ENOTDIR: "a path component is a file, not a folder",
    }
    hint = hints.get(e.errno or -1)
    if hint is None:
        return None
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{hint}"
