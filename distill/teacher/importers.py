"""Import soft labels scored elsewhere into a workspace, in the project's format (`distill.teacher.soft_labels`).

    python -m distill.teacher.importers FORMAT FILE WORKSPACE [--dataset DIR] [--drop-unknown] [--chunk-rows N]

- `flagembedding`: FlagEmbedding's reranker JSONL carries teacher scores as `pos_scores` / `neg_scores`; query
  and passage ids are derived from their texts exactly as `data=flagembedding` does, so the labels join that
  dataset.
- `trec-run`: a TREC run file (`qid Q0 docid rank score tag` per line), as any reranker toolkit writes one.
- `parquet`: a Parquet file with columns qid, docid, score (the fastest at millions of pairs).

The file is read `--chunk-rows` pairs at a time (each chunk one part of the soft labels), so memory holds one
chunk, the dataset's ids and 12 bytes per pair. Every pair is checked, and the soft labels appear only when
all are (a refusal leaves nothing behind); a refusal names the file and line (row for Parquet):
scores must be finite numbers within float32's range; a pair given twice with different scores is refused (twice
with the same score: kept once, counted); ids must be the dataset's own: a query its queries.jsonl lacks or a
document its corpus.jsonl lacks is refused (a student would learn from empty text), or with `--drop-unknown`
left out, counted and named in the manifest. The dataset is `--dataset DIR` (a BEIR folder) or the one the
workspace's candidates were built from (`make candidates` records it). When the workspace has candidates, the
import records their fingerprint, so students see when the labels go stale.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distill.data.beir import IdPositions
from distill.data.convert import flagembedding_ids, read_flagembedding
from distill.errors import DataError, DistillError, StageNotReadyError
from distill.ir import fingerprint
from distill.retrieval.importers import read_run
from distill.teacher.soft_labels import (
    SCHEMA_VERSION,
    part_name,
    validate_soft_labels,
    write_manifest,
    write_part,
)
from distill.workspace import Workspace, release_arrow_memory, staged_dir

F32_MAX = float(np.finfo(np.float32).max)
CHUNK_ROWS = 250_000  # pairs read, checked and written at a time (--chunk-rows)


def flagembedding_soft_labels(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The pairs of a FlagEmbedding file (whose records, texts included, are read whole: such files are training
    sets, not runs of millions of pairs), `chunk_rows` at a time."""
    rows: list[tuple[str, str, float, int]] = []
    for rec in read_flagembedding(path):
        qid, pos, neg = flagembedding_ids(rec)
        for key, ids in (("pos", pos), ("neg", neg)):
            if f"{key}_scores" not in rec:
                raise DataError(
                    f"{path}:{rec['_line']}: no {key}_scores; only scored FlagEmbedding files carry soft labels"
                )
            for did, s in zip(ids, rec[f"{key}_scores"], strict=True):
                if not isinstance(s, (int, float)) or isinstance(s, bool):
                    raise DataError(f"{path}:{rec['_line']}: {key}_scores holds {s!r}, not a number")
                rows.append((qid, did, float(s), rec["_line"]))
        if len(rows) >= chunk_rows:
            yield pd.DataFrame(rows, columns=["qid", "docid", "score", "line"])
            rows = []
    if rows:
        yield pd.DataFrame(rows, columns=["qid", "docid", "score", "line"])


def trec_run_soft_labels(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """A TREC run file's (qid, docid, score), `chunk_rows` lines at a time (the candidates importer's reader; the
    scores' range is checked with the other formats'); the rank column is ignored (the score orders)."""
    return read_run(path, chunk_rows, finite=False)


def parquet_soft_labels(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """A Parquet file's qid, docid, score, `chunk_rows` rows at a time."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several kinds for a file that is not Parquet
        raise DataError(
            f"{path}: not a readable Parquet file ({type(e).__name__}); give one with qid, docid, score"
        ) from e
    columns = [c for c in ("qid", "docid", "score") if c in pf.schema_arrow.names]
    start = 0
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns):
        df = validate_soft_labels(batch.to_pandas(), str(path), first_row=start)[["qid", "docid", "score"]]
        yield df.assign(line=np.arange(start + 1, start + len(df) + 1))
        start += len(df)
    if start == 0:  # no row: the columns are still checked
        validate_soft_labels(pf.schema_arrow.empty_table().to_pandas(), str(path))


READERS = {
    "flagembedding": flagembedding_soft_labels,
    "trec-run": trec_run_soft_labels,
    "parquet": parquet_soft_labels,
}
WHERE = {"parquet": "row"}  # how a position in the file is named (else: file:line)


def _at(path: Path, fmt: str, line: int) -> str:
    return f"{path}: row {line}" if WHERE.get(fmt) == "row" else f"{path}:{line}"


def checked_pairs(df: pd.DataFrame, path: Path, fmt: str) -> tuple[pd.DataFrame, int]:
    """The pairs with float32 scores, each once; (frame, identical repeats dropped). Refuses non-finite scores,
    scores beyond float32, and a pair repeated with another score."""
    score = df["score"].to_numpy(np.float64)
    bad = ~np.isfinite(score) | (np.abs(score) > F32_MAX)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = (
            "not finite"
            if not np.isfinite(score[i])
            else f"beyond float32's range (|score| <= {F32_MAX:.3g})"
        )
        raise DataError(
            f"{_at(path, fmt, int(df.line.iloc[i]))}: score {float(score[i])!r} is {what}; fix or drop that line"
        )
    df = df.astype({"qid": "string", "docid": "string"}).assign(score=score.astype(np.float32))
    dup = df.duplicated(["qid", "docid"], keep=False)
    if dup.any():
        groups = df[dup].groupby(["qid", "docid"], sort=False)
        conflict = groups.score.nunique() > 1
        if conflict.any():
            q, d = conflict[conflict].index[0]
            lines = df[dup & (df.qid == q) & (df.docid == d)].line.tolist()
            raise DataError(
                f"{_at(path, fmt, int(lines[1]))}: pair ({q!r}, {d!r}) already scored differently at line {lines[0]}; "
                f"keep one score per pair"
            )
    repeated = df.duplicated(["qid", "docid"])
    return df[~repeated].reset_index(drop=True), int(repeated.sum())


class DatasetIds:
    """The query and document ids of a BEIR folder (each JSONL file's `_id`, read a line at a time), found by the
    dataset's own lookup (`IdPositions`: sorted hashes, each asked id once per chunk): a pair's integer key is its
    query's position times the number of documents plus its document's."""

    def __init__(self, dataset: Path) -> None:
        self.dataset = dataset
        self.queries = IdPositions(self._ids(dataset / "queries.jsonl"))
        self.docs = IdPositions(self._ids(dataset / "corpus.jsonl"))

    @staticmethod
    def _ids(f: Path) -> list[str]:
        if not f.is_file():
            raise DataError(f"{f}: not found; --dataset must be a BEIR folder (corpus.jsonl, queries.jsonl)")
        with open(f, encoding="utf-8-sig") as fh:
            return [str(json.loads(line)["_id"]) for line in fh if line.strip()]

    def codes(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Each row's query and document position in the dataset (-1: not there)."""
        return self.queries(df.qid), self.docs(df.docid)


def workspace_dataset(ws: Workspace) -> Path:
    """The dataset folder the workspace's candidates were built from (recorded by `make candidates`)."""
    try:
        return Path(json.loads(ws.candidates_record.read_text())["dataset_dir"])
    except (OSError, ValueError, KeyError) as e:
        raise StageNotReadyError(
            f"{ws.root}: no candidates record names its dataset; give --dataset DIR (the BEIR folder whose ids the "
            f"labels use) or run `make candidates` for this workspace first"
        ) from e


def known_pairs(
    df: pd.DataFrame, path: Path, fmt: str, ids: DatasetIds, drop: bool, facts: dict
) -> tuple[pd.DataFrame, np.ndarray]:
    """The pairs whose query and document the dataset holds, and their integer keys; unknown ones refused or
    (`drop`) counted in `facts` (with the first three)."""
    q, d = ids.codes(df)
    unknown = (q < 0) | (d < 0)
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        first = df.iloc[i]
        which = f"qid {first.qid!r}" if q[i] < 0 else f"docid {first.docid!r}"
        if not drop:
            raise DataError(
                f"{_at(path, fmt, int(first.line))}: {which} is not in the dataset {ids.dataset} "
                f"({int(unknown.sum())} pair(s) name ids it lacks); use the dataset's ids, or --drop-unknown to "
                f"leave those pairs out"
            )
        bad = df[unknown]
        facts["unknown_pairs_dropped"] = facts.get("unknown_pairs_dropped", 0) + int(unknown.sum())
        examples = facts.setdefault("unknown_examples", [])
        for qid, docid, n in bad[["qid", "docid", "line"]].head(3 - len(examples)).itertuples(index=False):
            examples.append([str(qid), str(docid), int(n)])
        df = df[~unknown].reset_index(drop=True)
    known = ~unknown
    return df, q[known].astype(np.int64) * len(ids.docs) + d[known]


class PairLedger:
    """Every pair imported so far as a sorted integer key, with its score (12 bytes per pair): a pair repeated in a
    later chunk is dropped (the same score) or refused (another score). The refusal names both lines; the earlier
    one is found by reading the file again up to it (`first_line`), which only a refusal pays for.

    Written by hand because NumPy has no sorted set that grows in place: `np.insert` makes a new copy of the
    whole ledger at every chunk (twice the ledger at the end of an import). Here the arrays grow by `resize`
    (the C library's `realloc`, which moves a large block's pages without copying them) and each chunk's new keys
    are merged in place from the back (`_merge`), `MERGE_BLOCK` keys moved at a time."""

    MERGE_BLOCK = 1 << 18

    def __init__(self, capacity: int = 0) -> None:
        self._keys = np.zeros(max(capacity, 1), np.int64)
        self._scores = np.zeros(max(capacity, 1), np.float32)
        self.n = 0

    @property
    def keys(self) -> np.ndarray:
        return self._keys[: self.n]

    @property
    def scores(self) -> np.ndarray:
        return self._scores[: self.n]

    def add(self, df: pd.DataFrame, keys: np.ndarray, path: Path, fmt: str) -> tuple[pd.DataFrame, int]:
        """The rows of `df` (pairs once each, keys `keys`) not imported before; the number dropped."""
        at = np.minimum(np.searchsorted(self.keys, keys), max(self.n - 1, 0))
        again = (self.keys[at] == keys) if self.n else np.zeros(len(keys), bool)
        score = df.score.to_numpy(np.float32)
        differs = again & (self.scores[at] != score) if self.n else again
        if differs.any():
            i = int(np.flatnonzero(differs)[0])
            q, d = df.qid.iloc[i], df.docid.iloc[i]
            raise DataError(
                f"{_at(path, fmt, int(df.line.iloc[i]))}: pair ({q!r}, {d!r}) already scored differently at line "
                f"{first_line(path, fmt, q, d)}; keep one score per pair"
            )
        new = ~again
        order = np.argsort(keys[new], kind="stable")
        self._merge(keys[new][order], score[new][order])
        return df[new].reset_index(drop=True), int(again.sum())

    def _merge(self, keys: np.ndarray, scores: np.ndarray) -> None:
        """Merge sorted `keys` (none held yet) and their scores into the ledger, in place. Each held key moves
        back by the number of new keys below it; moving the held keys from the last block to the first never
        writes over one not yet moved (a key's place only grows), and the new keys then fill the gaps."""
        n, m = self.n, len(keys)
        if not m:
            return
        if n + m > len(self._keys):
            size = max(n + m, len(self._keys) + len(self._keys) // 4)
            self._keys.resize(size, refcheck=False)
            self._scores.resize(size, refcheck=False)
        held, held_scores = self._keys, self._scores
        places = np.searchsorted(held[:n], keys) + np.arange(m)
        for stop in range(n, 0, -self.MERGE_BLOCK):
            start = max(0, stop - self.MERGE_BLOCK)
            shift = np.searchsorted(keys, held[start:stop])
            if not shift[-1]:
                break  # no new key below this block: it and every block before it stay where they are
            to = np.arange(start, stop) + shift
            held[to], held_scores[to] = held[start:stop].copy(), held_scores[start:stop].copy()
        held[places], held_scores[places] = keys, scores
        self.n = n + m


def first_line(path: Path, fmt: str, qid: str, docid: str) -> int:
    """The line (row) where the pair first appears in the file."""
    for chunk in READERS[fmt](path, CHUNK_ROWS):
        hit = ((chunk.qid == qid) & (chunk.docid == docid)).to_numpy()
        if hit.any():
            return int(chunk.line.iloc[int(np.flatnonzero(hit)[0])])
    raise AssertionError(f"{path}: pair ({qid!r}, {docid!r}) not found again")  # the caller has just read it


def import_soft_labels(
    fmt: str,
    path: str | Path,
    workspace: str | Path,
    dataset: str | Path | None = None,
    drop_unknown: bool = False,
    chunk_rows: int = CHUNK_ROWS,
) -> dict[str, Any]:
    """Read `path` in `fmt` (a key of READERS) `chunk_rows` pairs at a time, check every pair, and write each
    chunk as a part of a complete scoring run in the workspace's soft_labels/ (which must not hold labels yet).
    The folder appears whole or not at all (`staged_dir`): a refusal at any line leaves nothing behind. Memory:
    one chunk, the dataset's ids and 12 bytes per pair imported (`PairLedger`)."""
    path, ws = Path(path), Workspace(Path(workspace).resolve())
    if fmt not in READERS:
        raise DistillError(f"import format {fmt!r}: choose one of {sorted(READERS)}")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise DistillError(f"--chunk-rows {chunk_rows!r}: give a whole number of pairs >= 1")
    if not path.is_file():
        raise DataError(f"{path}: no such file to import")
    out = ws.soft_labels
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise DistillError(
            f"{out} is not a folder of this workspace; remove it or import into another workspace"
        )
    if any(out.glob("part-*.parquet")):
        raise DistillError(f"{out} already holds soft labels; delete it or import into another workspace")
    identity: dict[str, Any] = {
        "teachers": [{"id": f"{fmt}:{path.name}", "revision": "sha256:" + fingerprint.of_file(path)}],
        "max_length": None,
        "dtype": None,
        "ensemble_norm": None,
        "source": str(path),
    }
    if ws.candidates.is_file():
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(ws.candidates).metadata.num_rows
        identity["candidates"] = {"rows": rows, "sha256": fingerprint.of_file(ws.candidates)}
    ledger, repeats = PairLedger(), 0
    facts: dict[str, Any] = {}
    shards: dict[str, dict[str, Any]] = {}
    ids: DatasetIds | None = None  # read with the first chunk: a file that is not one is refused first
    with staged_dir(out, "the soft labels") as tmp:
        for chunk in READERS[fmt](path, chunk_rows):
            df, within = checked_pairs(chunk, path, fmt)
            if ids is None:
                ids = DatasetIds(Path(dataset) if dataset else workspace_dataset(ws))
                queries = np.zeros(len(ids.queries), bool)
            df, keys = known_pairs(df, path, fmt, ids, drop_unknown, facts)
            # a key holds its query's position: the queries are counted without looking their ids up again (a pair
            # the ledger drops below was imported before, its query counted then)
            queries[keys // len(ids.docs)] = True
            df, again = ledger.add(df, keys, path, fmt)
            repeats += within + again
            if df.empty:
                continue
            key = f"{len(shards):05d}"
            sha = write_part(df[["qid", "docid", "score"]], tmp / part_name(len(shards)), identity)
            shards[key] = {"file": part_name(len(shards)), "rows": len(df), "sha256": sha}
            del df, chunk
            release_arrow_memory()  # what the chunk's reading and checks freed, back to the system before the next
        if not shards:
            raise DataError(f"{path}: no soft label left to import")
        summary = {
            "pairs": ledger.n,
            "queries": int(queries.sum()),
            "duplicates_dropped": repeats,
            **facts,
        }
        write_manifest(
            tmp,
            {
                "schema_version": SCHEMA_VERSION,
                "identity": identity,
                "complete": True,
                "shards": shards,
                "summary": summary,
            },
        )
    return summary


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m distill.teacher.importers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("format", choices=sorted(READERS))
    ap.add_argument("file", help="the file of scores (see the formats above)")
    ap.add_argument("workspace", type=Path, help="the workspace whose soft_labels/ to write")
    ap.add_argument(
        "--dataset", type=Path, help="the BEIR folder whose ids the labels use (default: the candidates')"
    )
    ap.add_argument(
        "--drop-unknown", action="store_true", help="leave out pairs naming ids the dataset lacks"
    )
    ap.add_argument(
        "--chunk-rows",
        type=int,
        default=CHUNK_ROWS,
        help=f"pairs read, checked and written at a time (default {CHUNK_ROWS:,}): memory holds one chunk",
    )
    args = ap.parse_args(argv)
    try:
        Workspace.check_root(args.workspace)
        s = import_soft_labels(
            args.format, args.file, args.workspace, args.dataset, args.drop_unknown, args.chunk_rows
        )
    except DistillError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    extra = "".join(
        f", {s[k]} {what}"
        for k, what in (
            ("duplicates_dropped", "repeated pairs kept once"),
            ("unknown_pairs_dropped", "pairs with unknown ids left out"),
        )
        if s.get(k)
    )
    print(
        f"imported {s['pairs']} soft labels for {s['queries']} queries into {args.workspace}/soft_labels{extra}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
