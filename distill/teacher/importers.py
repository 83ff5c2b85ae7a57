"""Import soft labels scored elsewhere into the project's format (`distill.teacher.soft_labels`).

    python -m distill.teacher.importers FORMAT FILE WORKSPACE

- `flagembedding`: FlagEmbedding's reranker JSONL carries teacher scores as `pos_scores` / `neg_scores`; query
  and passage ids are derived from their texts exactly as `data=flagembedding` does, so the labels join that
  dataset.
- `trec-run`: a TREC run file (`qid Q0 docid rank score tag` per line), as any reranker toolkit writes one.
- `parquet`: a Parquet file with columns qid, docid, score (the fastest at millions of pairs).

The ids must be the dataset's own (those in candidates.parquet); a student refuses pairs it has no features for.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distill.data.convert import flagembedding_ids, read_flagembedding
from distill.errors import DataError, DistillError
from distill.ir import fingerprint
from distill.teacher.soft_labels import (
    SCHEMA_VERSION,
    part_name,
    validate_soft_labels,
    write_manifest,
    write_part,
)
from distill.workspace import Workspace


def flagembedding_soft_labels(path: Path) -> pd.DataFrame:
    rows = []
    for rec in read_flagembedding(path):
        qid, pos, neg = flagembedding_ids(rec)
        for key, ids in (("pos", pos), ("neg", neg)):
            if f"{key}_scores" not in rec:
                raise DataError(
                    f"{path}:{rec['_line']}: no {key}_scores; only scored FlagEmbedding files carry "
                    f"soft labels"
                )
            for did, s in zip(ids, rec[f"{key}_scores"], strict=True):
                if not isinstance(s, (int, float)) or isinstance(s, bool):
                    raise DataError(f"{path}:{rec['_line']}: {key}_scores holds {s!r}, not a number")
                rows.append((qid, did, float(s)))
    df = pd.DataFrame(rows, columns=["qid", "docid", "score"]).astype({"score": np.float32})
    return validate_soft_labels(df, str(path))


def trec_run_soft_labels(path: Path) -> pd.DataFrame:
    """A TREC run file's (qid, docid, score); the rank column is ignored (the score orders)."""
    names = ["qid", "q0", "docid", "rank", "score", "tag"]
    try:
        df = pd.read_csv(
            path, sep=r"\s+", header=None, names=names, dtype=str, keep_default_na=False, engine="c"
        )
    except pd.errors.ParserError as e:
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
    out = pd.DataFrame({"qid": df["qid"], "docid": df["docid"], "score": score.astype(np.float32)})
    return validate_soft_labels(out, str(path))


def parquet_soft_labels(path: Path) -> pd.DataFrame:
    df = pd.read_parquet(path)
    df = validate_soft_labels(df, str(path))[["qid", "docid", "score"]]
    return df.astype({"score": np.float32})


READERS = {
    "flagembedding": flagembedding_soft_labels,
    "trec-run": trec_run_soft_labels,
    "parquet": parquet_soft_labels,
}


def import_soft_labels(fmt: str, path: str | Path, out: str | Path) -> dict[str, Any]:
    """Read `path` in `fmt` (a key of READERS) and write it as a complete one-part scoring run into `out`
    (a workspace's soft_labels/, which must not hold labels yet); duplicate (qid, docid) pairs keep the first."""
    path, out = Path(path), Path(out)
    if fmt not in READERS:
        raise DistillError(f"import format {fmt!r}: choose one of {sorted(READERS)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file to import")
    df = READERS[fmt](path)
    dup = df.duplicated(["qid", "docid"])
    df = df[~dup].reset_index(drop=True)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("part-*.parquet")):
        raise DistillError(f"{out} already holds soft labels; delete it or import into another workspace")
    identity = {
        "teachers": [
            {"id": f"{fmt}:{path.name}", "revision": "sha256:" + fingerprint.sha256_of_file(path)[:16]}
        ],
        "max_length": None,
        "dtype": None,
        "ensemble_norm": None,
        "source": str(path),
    }
    sha = write_part(df, out / part_name(0), identity)
    summary = {"pairs": len(df), "queries": int(df.qid.nunique()), "duplicates_dropped": int(dup.sum())}
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


def import_flagembedding(path: str | Path, out: str | Path) -> dict[str, Any]:
    return import_soft_labels("flagembedding", path, out)


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m distill.teacher.importers", description=__doc__)
    ap.add_argument("format", choices=sorted(READERS))
    ap.add_argument("file", help="the file of scores (see the formats above)")
    ap.add_argument("workspace", type=Path, help="the workspace whose soft_labels/ to write")
    args = ap.parse_args(argv)
    try:
        Workspace.check_root(args.workspace)
        s = import_soft_labels(args.format, args.file, Workspace(args.workspace.resolve()).soft_labels)
    except DistillError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"imported {s['pairs']} soft labels for {s['queries']} queries into {args.workspace}/soft_labels")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
