"""Import soft labels scored elsewhere into a workspace, in the project's format (`distill.teacher.soft_labels`).

    python -m distill.teacher.importers FORMAT FILE WORKSPACE [--dataset DIR] [--drop-unknown]

- `flagembedding`: FlagEmbedding's reranker JSONL carries teacher scores as `pos_scores` / `neg_scores`; query
  and passage ids are derived from their texts exactly as `data=flagembedding` does, so the labels join that
  dataset.
- `trec-run`: a TREC run file (`qid Q0 docid rank score tag` per line), as any reranker toolkit writes one.
- `parquet`: a Parquet file with columns qid, docid, score (the fastest at millions of pairs).

Every pair is checked before anything is written, and a refusal names the file and line (row for Parquet):
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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distill.data.convert import flagembedding_ids, read_flagembedding
from distill.errors import DataError, DistillError, StageNotReadyError
from distill.ir import fingerprint
from distill.teacher.soft_labels import (
    SCHEMA_VERSION,
    part_name,
    validate_soft_labels,
    write_manifest,
    write_part,
)
from distill.workspace import Workspace

F32_MAX = float(np.finfo(np.float32).max)


def flagembedding_soft_labels(path: Path) -> pd.DataFrame:
    rows = []
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
    return pd.DataFrame(rows, columns=["qid", "docid", "score", "line"])


def trec_run_soft_labels(path: Path) -> pd.DataFrame:
    """A TREC run file's (qid, docid, score); the rank column is ignored (the score orders)."""
    names = ["qid", "q0", "docid", "rank", "score", "tag"]
    try:
        df = pd.read_csv(
            path, sep=r"\s+", header=None, names=names, dtype=str, keep_default_na=False, engine="c"
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(
            f"{path}: not a TREC run ({' '.join(str(e).split())}); each line needs {' '.join(names)}"
        ) from e
    short = (df["tag"] == "").to_numpy()
    if short.any():
        i = int(np.flatnonzero(short)[0])
        raise DataError(
            f"{path}:{i + 1}: {(df.iloc[i] != '').sum()} fields; a TREC run line has 6: {' '.join(names)}"
        )
    score = pd.to_numeric(df["score"], errors="coerce")
    if score.isna().any():
        i = int(np.flatnonzero(score.isna().to_numpy())[0])
        raise DataError(f"{path}:{i + 1}: score {df['score'].iloc[i]!r} is not a number (fifth field)")
    return pd.DataFrame(
        {"qid": df["qid"], "docid": df["docid"], "score": score, "line": np.arange(1, len(df) + 1)}
    )


def parquet_soft_labels(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several kinds for a file that is not Parquet
        raise DataError(
            f"{path}: not a readable Parquet file ({type(e).__name__}); give one with qid, docid, score"
        ) from e
    df = validate_soft_labels(df, str(path))[["qid", "docid", "score"]]
    return df.assign(line=np.arange(1, len(df) + 1))


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


def dataset_ids(dataset: Path) -> tuple[set[str], set[str]]:
    """The query and document ids of a BEIR folder (read from its JSONL files' `_id`)."""

    def ids(f: Path) -> set[str]:
        if not f.is_file():
            raise DataError(f"{f}: not found; --dataset must be a BEIR folder (corpus.jsonl, queries.jsonl)")
        return {
            str(json.loads(line)["_id"])
            for line in f.read_text(encoding="utf-8-sig").splitlines()
            if line.strip()
        }

    return ids(dataset / "queries.jsonl"), ids(dataset / "corpus.jsonl")


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
    df: pd.DataFrame, path: Path, fmt: str, dataset: Path, drop: bool
) -> tuple[pd.DataFrame, dict]:
    """The pairs whose query and document the dataset holds; unknown ones refused or (`drop`) counted."""
    qids, docids = dataset_ids(dataset)
    unknown = ~df.qid.isin(qids) | ~df.docid.isin(docids)
    if not unknown.any():
        return df, {}
    first = df[unknown].iloc[0]
    which = f"qid {first.qid!r}" if first.qid not in qids else f"docid {first.docid!r}"
    if not drop:
        raise DataError(
            f"{_at(path, fmt, int(first.line))}: {which} is not in the dataset {dataset} ({int(unknown.sum())} "
            f"pair(s) name ids it lacks); use the dataset's ids, or --drop-unknown to leave those pairs out"
        )
    bad = df[unknown]
    facts = {
        "unknown_pairs_dropped": int(unknown.sum()),
        "unknown_examples": [
            [str(q), str(d), int(n)]
            for q, d, n in bad[["qid", "docid", "line"]].head(3).itertuples(index=False)
        ],
    }
    return df[~unknown].reset_index(drop=True), facts


def import_soft_labels(
    fmt: str,
    path: str | Path,
    workspace: str | Path,
    dataset: str | Path | None = None,
    drop_unknown: bool = False,
) -> dict[str, Any]:
    """Read `path` in `fmt` (a key of READERS), check every pair, and write it as a complete one-part scoring
    run into the workspace's soft_labels/ (which must not hold labels yet)."""
    path, ws = Path(path), Workspace(Path(workspace).resolve())
    if fmt not in READERS:
        raise DistillError(f"import format {fmt!r}: choose one of {sorted(READERS)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file to import")
    out = ws.soft_labels
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise DistillError(
            f"{out} is not a folder of this workspace; remove it or import into another workspace"
        )
    if any(out.glob("part-*.parquet")):
        raise DistillError(f"{out} already holds soft labels; delete it or import into another workspace")
    df, repeats = checked_pairs(READERS[fmt](path), path, fmt)
    df, unknown = known_pairs(
        df, path, fmt, Path(dataset) if dataset else workspace_dataset(ws), drop_unknown
    )
    if df.empty:
        raise DataError(f"{path}: no soft label left to import")
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
    out.mkdir(parents=True, exist_ok=True)
    sha = write_part(df[["qid", "docid", "score"]], out / part_name(0), identity)
    summary = {"pairs": len(df), "queries": int(df.qid.nunique()), "duplicates_dropped": repeats, **unknown}
    write_manifest(
        out,
        {
            "schema_version": SCHEMA_VERSION,
            "identity": identity,
            "complete": True,
            "shards": {"00000": {"file": part_name(0), "rows": len(df), "sha256": sha}},
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
    args = ap.parse_args(argv)
    try:
        Workspace.check_root(args.workspace)
        s = import_soft_labels(args.format, args.file, args.workspace, args.dataset, args.drop_unknown)
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
