"""Candidates from any other engine (Anserini, Elasticsearch, OpenSearch, Vespa, ...) through its run file:

    python -m distill.retrieval.importers trec-run RUN_FILE WORKSPACE --dataset DIR

writes the workspace's `candidates.parquet` (qid, docid, rank, bm25, split) with the run's scores as `bm25`,
its metrics and its record, exactly as `make candidates` would from its own BM25; DIR is the dataset's BEIR
folder (`data/<name>` once `make data` has converted it), split as the stages split it. The run is read in chunks (memory holds one query's lines and one chunk), must be
grouped by query (as engines write runs), and every line is checked: six fields, a finite numeric score, ids the
dataset holds, no pair twice. A refusal names the line. Lines of queries the dataset holds but judges in no split
are left out and counted (a candidate needs a split).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distill.data.beir import Dataset
from distill.errors import DataError, DistillError
from distill.ir import fingerprint
from distill.retrieval.candidates import CandidatesWriter, queries_per_split
from distill.retrieval.schema import RetrievalConfig
from distill.workspace import Workspace, write_json_atomic

NAMES = ["qid", "q0", "docid", "rank", "score", "tag"]
CHUNK_LINES = 500_000


def read_run(path: Path, chunk: int = CHUNK_LINES, finite: bool = True) -> Any:
    """The run's lines in chunks, each a frame of qid, docid, score and the 1-based line number, checked: six
    fields, a numeric score, finite unless `finite` is false (for a caller that checks the scores' range itself)."""
    if not path.is_file():
        raise DataError(f"{path}: no such run file")
    first = 1
    try:
        reader = pd.read_csv(
            path, sep=r"\s+", header=None, names=NAMES, dtype=str, keep_default_na=False, chunksize=chunk
        )
        for df in reader:
            line = np.arange(first, first + len(df))
            first += len(df)
            short = (df["tag"] == "").to_numpy()
            if short.any():
                i = int(np.flatnonzero(short)[0])
                n = int((df.iloc[i] != "").sum())
                raise DataError(f"{path}:{line[i]}: {n} fields; a TREC run line has 6: {' '.join(NAMES)}")
            score = pd.to_numeric(df["score"], errors="coerce").to_numpy(np.float64)
            bad = ~np.isfinite(score) if finite else np.isnan(score)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                what = "a finite number" if finite else "a number"
                raise DataError(
                    f"{path}:{line[i]}: score {df['score'].iloc[i]!r} is not {what} (fifth field)"
                )
            yield pd.DataFrame(
                {"qid": df["qid"].to_numpy(), "docid": df["docid"].to_numpy(), "score": score, "line": line}
            )
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(
            f"{path}: not a TREC run ({' '.join(str(e).split())}); each line needs {' '.join(NAMES)}"
        ) from e


def by_query(chunks: Any, path: Path) -> Any:
    """Each query's lines at once (a query may span chunks), refusing a query that comes back after another."""
    seen: set[str] = set()
    held: pd.DataFrame | None = None
    for df in chunks:
        if held is not None:
            df = pd.concat([held, df], ignore_index=True)
        qids = df.qid.to_numpy(dtype=object)
        starts = np.flatnonzero(np.r_[True, qids[1:] != qids[:-1]])
        ends = np.r_[starts[1:], len(df)]
        for s, e in zip(starts[:-1], ends[:-1], strict=True):
            yield _one_query(df.iloc[s:e], seen, path)
        held = df.iloc[starts[-1] :]
    if held is not None and len(held):
        yield _one_query(held, seen, path)


def _one_query(g: pd.DataFrame, seen: set[str], path: Path) -> pd.DataFrame:
    q = g.qid.iloc[0]
    if q in seen:
        raise DataError(
            f"{path}:{g.line.iloc[0]}: query {q!r} comes back after other queries; a run must be grouped by query "
            f"(sort it by qid, then rank)"
        )
    seen.add(q)
    dup = g.duplicated("docid")
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(
            f"{path}:{g.line.iloc[i]}: pair ({q!r}, {g.docid.iloc[i]!r}) is given twice; keep one line per pair"
        )
    return g


def import_run(
    path: Path, ws: Workspace, ds: Dataset, splits: dict[str, list[str]], chunk_queries: int
) -> dict:
    """Write the run as the workspace's candidates; returns BM25 (the run's) metrics and the counts."""
    split_of = {q: s for s, qids in splits.items() for q in qids}
    writer = CandidatesWriter(ws.candidates, ds.qrels)
    skipped = 0
    buf: dict[str, list[pd.DataFrame]] = {}
    try:
        for g in by_query(read_run(path), path):
            q = str(g.qid.iloc[0])
            if q not in ds.queries.index:
                raise DataError(f"{path}:{g.line.iloc[0]}: qid {q!r} is not a query of dataset {ds.name!r}")
            unknown = ~g.docid.isin(ds.corpus.index)
            if unknown.any():
                i = int(np.flatnonzero(unknown.to_numpy())[0])
                raise DataError(
                    f"{path}:{g.line.iloc[i]}: docid {g.docid.iloc[i]!r} is not in the corpus of dataset {ds.name!r} "
                    f"({int(unknown.sum())} such line(s) for this query); the run must use the dataset's ids"
                )
            split = split_of.get(q)
            if split is None:
                skipped += len(g)
                continue
            g = g.sort_values("score", ascending=False, kind="stable")  # ties: the run's own order
            rows = pd.DataFrame(
                {
                    "qid": q,
                    "docid": g.docid.to_numpy(),
                    "rank": np.arange(1, len(g) + 1, dtype=np.int32),
                    "bm25": g.score.to_numpy(np.float32),
                    "split": split,
                }
            )
            buf.setdefault(split, []).append(rows)
            if len(buf[split]) >= chunk_queries:
                _flush(writer, buf, split)
        for split in list(buf):
            _flush(writer, buf, split)
        metrics = writer.close()
    except BaseException:
        writer.abort()
        raise
    return {
        "metrics": metrics,
        "rows": writer.rows,
        "queries": writer.queries,
        "lines_of_unjudged_queries": skipped,
    }


def _flush(writer: CandidatesWriter, buf: dict[str, list[pd.DataFrame]], split: str) -> None:
    frames = buf.pop(split, [])
    if frames:
        rows = pd.concat(frames, ignore_index=True)
        writer.add(rows, list(pd.unique(rows.qid)), split)


def main(argv: list[str]) -> int:
    import argparse

    from distill.data.beir import load_beir
    from distill.data.prepare import split_test

    ap = argparse.ArgumentParser(
        prog="python -m distill.retrieval.importers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("format", choices=["trec-run"])
    ap.add_argument("run", type=Path, help="the run file: qid Q0 docid rank score tag per line")
    ap.add_argument("workspace", type=Path, help="the workspace whose candidates.parquet to write")
    ap.add_argument(
        "--dataset",
        type=Path,
        required=True,
        help="the dataset's BEIR folder (e.g. data/vaswani after make data)",
    )
    ap.add_argument(
        "--test-fraction",
        type=float,
        default=0.5,
        help="as data.test_fraction, for a folder judged on test only",
    )
    ap.add_argument("--split-seed", type=int, default=0, help="as data.split_seed")
    ap.add_argument(
        "--chunk-queries", type=int, default=RetrievalConfig.chunk_queries, help="as retrieval.chunk_queries"
    )
    args = ap.parse_args(argv)
    try:
        Workspace.check_root(args.workspace)
        if args.chunk_queries < 1:
            raise DistillError(f"--chunk-queries={args.chunk_queries}: must be >= 1")
        ws = Workspace(args.workspace.resolve())
        ws.root.mkdir(parents=True, exist_ok=True)
        ds = load_beir(args.dataset)
        if "train" not in ds.qrels and "test" in ds.qrels:
            split_test(ds, args.test_fraction, args.split_seed)
        splits = queries_per_split(ds, sorted(ds.qrels, key=lambda s: (s != "train", s)))
        out = import_run(args.run, ws, ds, splits, args.chunk_queries)
        write_json_atomic(
            fingerprint.record([{"source": "trec-run"}], {"dataset": args.dataset, "run": args.run})
            | {"dataset_dir": str(args.dataset.resolve())},
            ws.candidates_record,
        )
        write_json_atomic(
            {"bm25": out["metrics"], "source": f"trec-run:{args.run.name}"}, ws.candidates_metrics
        )
    except DistillError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    skipped = (
        f", {out['lines_of_unjudged_queries']} lines of unjudged queries left out"
        if out["lines_of_unjudged_queries"]
        else ""
    )
    print(f"imported {out['rows']} candidates for {out['queries']} queries into {ws.candidates}{skipped}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
