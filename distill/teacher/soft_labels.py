"""The soft-label format: `soft_labels/part-*.parquet` + `manifest.json`.

Columns: `qid` (string), `docid` (string), `score` (float32; a single teacher's raw logit, or the combined
score of an ensemble), and for ensembles one `score_<teacher>` column per teacher (raw logits).
Parts are written in row groups of ROW_GROUP_ROWS rows, which readers take one at a time (`iter_soft_labels`).
Each part's Arrow schema metadata (key `distill`) holds the schema version, the teachers (id and revision or
content hash), max_length, dtype, the config hash and the creation time.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from distill.errors import DataError, StageNotReadyError
from distill.faults import kill_point
from distill.ir.fingerprint import of_file, sha256_of_file
from distill.workspace import release_arrow_memory

SCHEMA_VERSION = 1
META_KEY = b"distill"
MANIFEST = "manifest.json"
ROW_GROUP_ROWS = 100_000  # rows per Parquet row group of a part: what a reader holds at a time


def part_name(i: int) -> str:
    return f"part-{i:05d}.parquet"


def write_part(df: pd.DataFrame, path: Path, identity: dict[str, Any]) -> str:
    """Write one shard crash-safely: temp file, fsync, rename. Returns the file's sha256."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = {
        "schema_version": SCHEMA_VERSION,
        **identity,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()}
    )
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as fh:
            pq.write_table(table, fh, row_group_size=ROW_GROUP_ROWS)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. a full disk: no partial file is left behind
        raise
    kill_point("before_rename")
    os.replace(tmp, path)
    kill_point("after_rename")
    return sha256_of_file(path)


def part_identity(path: Path) -> dict[str, Any] | None:
    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[META_KEY])
    except Exception:  # unreadable, truncated, foreign file: the caller redoes the shard
        return None


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest, or None when it is missing or unreadable (a corrupted manifest is rebuilt from the parts)."""
    f = root / MANIFEST
    if not f.is_file():
        return None
    try:
        m = json.loads(f.read_text())
        return m if isinstance(m, dict) and "identity" in m and "shards" in m else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    tmp = root / (MANIFEST + ".tmp")
    try:
        with tmp.open("w") as fh:
            json.dump(manifest, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, root / MANIFEST)


@contextlib.contextmanager
def manifest_lock(root: Path) -> Iterator[None]:
    """An exclusive lock on the manifest (`manifest.lock`, filelock: fcntl on Unix, msvcrt on Windows), so processes
    scoring disjoint shards of one run can each record theirs."""
    from filelock import FileLock

    with FileLock(str(root / "manifest.lock")):
        yield


def update_manifest(
    root: Path, change: Callable[[dict[str, Any]], None], fresh: dict[str, Any]
) -> dict[str, Any]:
    """Read the manifest under the lock (`fresh` when there is none), apply `change` to it, write it back
    atomically; returns the result."""
    with manifest_lock(root):
        manifest = read_manifest(root) or json.loads(json.dumps(fresh))
        change(manifest)
        write_manifest(root, manifest)
    return manifest


def read_soft_labels(root: Path, candidates: Path | None = None, qids: Any = None) -> pd.DataFrame:
    """The soft labels of a finished scoring (or import) run, each part checked before it is used (see
    `iter_soft_labels`), and no (qid, docid) pair twice. With `qids`, only those queries' rows are kept (read a
    row group at a time: the others never stay in memory). Every refusal names the file and the fix."""
    parts = iter_soft_labels(root, candidates)
    if qids is not None:
        wanted = pd.Index(qids, dtype="str")
        parts = (p[p.qid.isin(wanted).to_numpy()] for p in parts)
    out = pd.concat(list(parts), ignore_index=True)
    dup = out.duplicated(["qid", "docid"])
    if dup.any():
        first = out[dup].iloc[0]
        raise DataError(duplicate_pairs(root, int(dup.sum()), first.qid, first.docid))
    return out


def duplicate_pairs(root: Path, n: int, qid: str, docid: str) -> str:
    return (
        f"{root}: {n} (qid, docid) pair(s) appear more than once (first: {qid!r}, {docid!r}); re-score with "
        f"teacher.overwrite=true"
    )


def iter_soft_labels(
    root: Path, candidates: Path | None = None, columns: list[str] | None = None
) -> Iterator[pd.DataFrame]:
    """The soft labels of a finished scoring (or import) run, a row group at a time: memory holds one row group.
    Before any row is used the run is checked: finished, and with `candidates`, scored on that very file (its
    content fingerprint; else the soft labels are stale and refused); each part is checked before its rows:
    listed once, a plain file inside `root`, its bytes those the manifest's sha256 records, its row count the
    manifest's; each row group's columns and scores are valid. `columns`: the columns to read (qid, docid and
    score are always read). A pair repeated across row groups is not looked for here: `read_soft_labels` does
    over all of them, and a reader that streams checks the pairs it uses."""
    manifest = read_manifest(root)
    if manifest is None:
        raise StageNotReadyError(f"{root}/{MANIFEST} not found: run `make teacher-score` first")
    scored_on = manifest.get("identity", {}).get("candidates", {}).get("sha256")
    if candidates is not None and scored_on is not None and scored_on != of_file(candidates):
        raise StageNotReadyError(
            f"{root} is stale: it was scored on other candidates than {candidates} (re-made since); re-score "
            f'with `make teacher-score ARGS="teacher.overwrite=true ..."` (the same data/retrieval overrides)'
        )
    if not manifest.get("complete"):
        raise StageNotReadyError(
            f"{root}: teacher scoring is not finished ({len(manifest['shards'])} shards "
            f"done); re-run `make teacher-score` to complete it"
        )
    check_parts_listed_once(manifest, root)
    if not manifest["shards"]:
        raise DataError(
            f"{root}: the scoring run holds no soft labels (empty candidates?); re-run `make candidates`"
        )
    for key, entry in sorted(manifest["shards"].items()):
        yield from iter_part(root, key, entry, columns)


def iter_part(
    root: Path, key: str, entry: dict[str, Any], columns: list[str] | None = None
) -> Iterator[pd.DataFrame]:
    """One part listed in the manifest, a row group at a time, after checking it is the file the manifest
    recorded (name, sha256, row count)."""
    redo = "re-run `make teacher-score` to redo it (or teacher.overwrite=true to start fresh)"
    name = str(entry.get("file", ""))
    f = root / name
    if Path(name).name != name or not name.startswith("part-") or f.is_symlink():
        raise DataError(
            f"{root}/{MANIFEST}: shard {key} names {name!r}, not a part file of this folder; {redo}"
        )
    if not f.is_file():
        raise DataError(f"{f}: listed in the manifest but missing; {redo}")
    if entry.get("sha256") != sha256_of_file(f):
        raise DataError(f"{f}: its content is not what the manifest recorded (sha256 differs); {redo}")
    try:
        pf = pq.ParquetFile(f)
    except Exception as e:  # the checksum matched a file that never was Parquet: a foreign manifest
        raise DataError(f"{f}: not a readable Parquet file ({type(e).__name__}); {redo}") from e
    if "rows" in entry and pf.metadata.num_rows != int(entry["rows"]):
        raise DataError(f"{f}: {pf.metadata.num_rows} rows, the manifest recorded {entry['rows']}; {redo}")
    have = pf.schema_arrow.names
    wanted = (
        None
        if columns is None
        else [c for c in dict.fromkeys(["qid", "docid", "score", *columns]) if c in have]
    )
    if pf.num_row_groups == 0:
        yield validate_soft_labels(pf.schema_arrow.empty_table().to_pandas(), str(f))
    start = 0
    for i in range(pf.num_row_groups):
        release_arrow_memory()
        try:
            df = pf.read_row_group(i, columns=wanted).to_pandas()
        except Exception as e:
            raise DataError(f"{f}: row group {i} is not readable ({type(e).__name__}); {redo}") from e
        yield validate_soft_labels(df, str(f), first_row=start)
        start += len(df)


def check_parts_listed_once(manifest: dict[str, Any], root: Path) -> None:
    files = [str(e.get("file")) for e in manifest["shards"].values()]
    twice = sorted({f for f in files if files.count(f) > 1})
    if twice:
        raise DataError(
            f"{root}/{MANIFEST} lists {twice} under more than one shard; re-score with teacher.overwrite=true"
        )


def validate_soft_labels(df: pd.DataFrame, where: str, first_row: int = 0) -> pd.DataFrame:
    """`df` with qid and docid as strings, after checking its columns and scores; `first_row`: the position of
    its first row in the file, so a bad row is named by its row in the file."""
    missing = [c for c in ("qid", "docid", "score") if c not in df]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; soft labels need qid, docid, score")
    if not pd.api.types.is_float_dtype(df["score"]):
        raise DataError(
            f"{where}: column 'score' has type {df['score'].dtype}; soft labels must be float scores "
            f"(cast it to float32)"
        )
    bad = ~np.isfinite(df["score"].to_numpy())
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: {int(bad.sum())} non-finite score(s) (NaN/inf), first at row {first_row + i + 1} "
            f"(qid {df.qid.iloc[i]!r}, docid {df.docid.iloc[i]!r}); re-score or drop those rows"
        )
    return df.astype({"qid": "string", "docid": "string"})
