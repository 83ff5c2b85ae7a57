"""Import soft labels scored elsewhere into the project's format (`distill.teacher.soft_labels`).

    python -m distill.teacher.importers flagembedding FILE.jsonl WORKSPACE

FlagEmbedding's reranker JSONL carries teacher scores as `pos_scores` / `neg_scores`; query and passage ids
are derived from their texts exactly as `data=flagembedding` does, so the imported labels join that dataset.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distill.data.convert import flagembedding_ids, read_flagembedding
from distill.errors import DataError, DistillError
from distill.teacher.soft_labels import (
    SCHEMA_VERSION,
    part_name,
    validate_soft_labels,
    write_manifest,
    write_part,
)
from distill.workspace import file_sha256


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


def import_flagembedding(path: str | Path, out: str | Path) -> dict[str, Any]:
    path, out = Path(path), Path(out)
    df = flagembedding_soft_labels(path)
    dup = df.duplicated(["qid", "docid"])
    df = df[~dup].reset_index(drop=True)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("part-*.parquet")):
        raise DistillError(f"{out} already holds soft labels; delete it or import into another workspace")
    identity = {
        "teachers": [{"id": f"flagembedding:{path.name}", "revision": "sha256:" + file_sha256(path)[:16]}],
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


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m distill.teacher.importers", description=__doc__)
    ap.add_argument("format", choices=["flagembedding"])
    ap.add_argument("file", help="the JSONL file with pos_scores / neg_scores")
    ap.add_argument("workspace", type=Path, help="the workspace whose soft_labels/ to write")
    args = ap.parse_args(argv)
    try:
        s = import_flagembedding(args.file, args.workspace / "soft_labels")
    except DistillError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"imported {s['pairs']} soft labels for {s['queries']} queries into {args.workspace}/soft_labels")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
