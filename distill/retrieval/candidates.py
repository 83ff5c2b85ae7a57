"""`make candidates`: BM25 top-k per query of each split -> candidates.parquet (qid, docid, rank, bm25, split)."""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf

from distill.config import to_container
from distill.data.beir import Dataset
from distill.data.prepare import dataset_dir, load_dataset
from distill.distributed import dask_client, ordered_map
from distill.errors import ConfigError, DataError, StageNotReadyError
from distill.ir import fingerprint
from distill.ir.bm25 import BM25Index, Tokenizer
from distill.ir.metrics import per_query
from distill.ir.pools import forked_pool, ordered_submit
from distill.ir.tantivy_index import TantivyIndex
from distill.stamps import Stage, data_config
from distill.tracking import start_run
from distill.workspace import Workspace, release_arrow_memory, write_json_atomic

log = logging.getLogger(__name__)


def build_index(
    ds: Dataset, rc: Any, ws: Workspace | None = None, release_texts: bool = False
) -> BM25Index | TantivyIndex:
    """The BM25 index of the corpus for `retrieval.engine`: bm25s in memory, or tantivy in the workspace's
    index/ folder (reused while the texts and the tokenisation are the same). `release_texts`: the caller needs
    the corpus's texts no more, so the dataset drops them (`Dataset.drop_texts`) once they are tokenised, before
    bm25s builds its postings (at 100x the sample world, the texts are about a fifth of the candidates stage's
    peak)."""
    texts = ds.lazy_doc_texts(rc.fields)  # read a chunk at a time by both engines: no copy of the corpus
    if rc.engine == "tantivy":
        if ws is None:
            raise ConfigError(
                "retrieval.engine=tantivy keeps its index in the workspace: give the stage a workspace"
            )
        tokenizer = Tokenizer(rc.stemmer, rc.stopwords, rc.lowercase)
        options = {k: rc[k] for k in ("fields", "stemmer", "stopwords", "lowercase")}
        identity = {"texts": fingerprint.of_texts(texts), "options": fingerprint.of_config(options)}
        index = TantivyIndex.open(ws.root / "index" / "tantivy", texts, tokenizer, identity)
        if release_texts:
            ds.drop_texts(rc.fields)
        return index
    bm25 = BM25Index(
        texts,
        k1=rc.k1,
        b=rc.b,
        method=rc.method,
        stemmer=rc.stemmer,
        stopwords=rc.stopwords,
        lowercase=rc.lowercase,
        after_tokens=(lambda: ds.drop_texts(rc.fields)) if release_texts else None,
    )
    release_arrow_memory()  # what tokenising and the build freed (token parts, a step's counts), back to the system
    return bm25


def queries_per_split(ds: Dataset, splits: list[str]) -> dict[str, list[str]]:
    """qids per split; a query judged in two splits is an error (it would leak test labels into training)."""
    out = {s: ds.split_qids(s) for s in splits}
    seen: dict[str, str] = {}
    for s, qids in out.items():
        for q in qids:
            if q in seen:
                raise DataError(
                    f"query {q!r} is judged in both qrels/{seen[q]}.tsv and qrels/{s}.tsv; "
                    f"a query must belong to one split"
                )
            seen[q] = s
    return out


def candidate_splits(path: Path) -> dict[str, list[str]]:
    """The queries of each split of a candidates file, read a batch at a time (memory: the queries, not pairs)."""
    seen: dict[str, dict[str, None]] = {}
    for batch in pq.ParquetFile(path).iter_batches(batch_size=262_144, columns=["qid", "split"]):
        df = batch.to_pandas().drop_duplicates()
        for split, qid in zip(df["split"].astype(str), df["qid"].astype(str), strict=True):
            seen.setdefault(split, {})[qid] = None
    return {s: list(q) for s, q in seen.items()}


def checked_candidates(cfg: DictConfig, ws: Workspace, ds: Dataset) -> dict[str, list[str]]:
    """The queries of each split of the workspace's candidates.parquet, once checked against the dataset `ds` the
    stage loaded from `cfg.data`; every stage that reads the candidates with the dataset calls this first.

    - Made from this dataset: the fingerprint of the dataset folder that `make candidates` (or the run-file
      importer) recorded in candidates.record.json equals the folder's now. Ids alone cannot tell: a dataset
      regenerated or edited keeps its ids and changes its texts and judgements.
    - Each query listed in the split the dataset judges it in now (the data.split_seed / data.test_fraction of a
      dataset split at load time changes that without changing a file), also when no record is there
      (candidates written by another tool)."""
    path = ws.require(ws.candidates, "candidates")
    if ws.candidates_record.is_file():
        try:
            recorded = json.loads(ws.candidates_record.read_text())["inputs"]["dataset"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(
                f"{ws.candidates_record} does not say which dataset the candidates were made from ({e!r}): re-run "
                f"`make candidates`"
            ) from e
        folder = dataset_dir(cfg)
        if recorded != fingerprint.of_folder(folder):
            raise StageNotReadyError(
                f"{path} was made from another dataset than {folder} holds now (the dataset's fingerprint in "
                f"{ws.candidates_record.name} differs): re-run `make candidates` with the same data= and "
                f"paths.workspace= overrides"
            )
    splits = candidate_splits(path)
    judged: dict[str, set[str]] = {}
    for split, qrels in ds.qrels.items():
        for q in pd.unique(qrels.qid):
            judged.setdefault(str(q), set()).add(split)
    moved = [(q, s) for s, qids in splits.items() for q in qids if s not in judged.get(q, ())]
    if moved:
        q, s = moved[0]
        where = (
            f"judged in {'/'.join(repr(x) for x in sorted(judged[q]))}"
            if q in judged
            else "which the dataset does not judge"
        )
        raise DataError(
            f"{path}: {len(moved)} of {sum(map(len, splits.values()))} queries are listed in a split the dataset does "
            f"not judge them in now (first: query {q!r} in {s!r}, {where}): the dataset or its split "
            f"(data.test_fraction, data.split_seed) changed since the candidates were made; re-run `make candidates`"
        )
    return splits


CANDIDATES_SCHEMA = pa.schema(
    [
        ("qid", pa.string()),
        ("docid", pa.string()),
        ("rank", pa.int32()),
        ("bm25", pa.float32()),
        ("split", pa.string()),
    ]
)


def search_chunk(ds: Dataset, index: Any, qids: list[str], k: int, split: str) -> pd.DataFrame:
    """The top k of each query of `qids` (one split), as candidate rows in query order."""
    docids = ds.corpus.index.to_numpy()
    pos, scores = index.search(ds.queries.loc[qids, "text"].tolist(), k)
    lens = np.array([len(p) for p in pos], dtype=np.int64)
    return pd.DataFrame(
        {
            "qid": np.repeat(np.asarray(qids, dtype=object), lens),
            "docid": docids[np.concatenate(pos)] if len(pos) else np.empty(0, object),
            "rank": np.concatenate([np.arange(1, n + 1) for n in lens]).astype(np.int32) if len(lens) else [],
            "bm25": np.concatenate(scores).astype(np.float32) if len(scores) else [],
            "split": split,
        }
    )


def iter_shards(
    path: Path, shard_size: int, columns: tuple[str, ...] = ("qid", "docid")
) -> Iterator[pd.DataFrame]:
    """Consecutive shards of `columns` of a candidates file, streamed, each about `shard_size` rows and ending at a
    query boundary (so a query's candidates are never split); a file not grouped by query is refused."""
    pf = pq.ParquetFile(path)
    missing = set(columns) - set(pf.schema_arrow.names)
    if missing:
        raise DataError(f"{path}: missing column(s) {sorted(missing)}; candidates need qid and docid")
    buf: list[pd.DataFrame] = []
    n = 0
    seen: set[str] = set()
    row = 0
    for batch in pf.iter_batches(batch_size=65536, columns=list(columns)):
        df = batch.to_pandas().astype({"qid": "string", "docid": "string"})
        df.index = pd.RangeIndex(row, row + len(df))
        row += len(df)
        # Queries must be contiguous: a qid that reappears after another one means the file is not grouped.
        q_arr = df.qid.to_numpy(dtype=object)
        starts = np.r_[True, q_arr[1:] != q_arr[:-1]] if len(q_arr) else np.zeros(0, dtype=bool)
        if buf and df.qid.iloc[0] == buf[-1].qid.iloc[-1]:
            starts[0] = False
        for i in np.flatnonzero(starts):
            q = df.qid.iloc[i]
            if q in seen:
                raise DataError(
                    f"{path}: row {df.index[i] + 1}: qid {q!r} appears again after other queries; "
                    f"candidates must be grouped by qid (sort the file by qid, rank)"
                )
            seen.add(q)
        buf.append(df)
        n += len(df)
        while n >= shard_size:
            cat = pd.concat(buf)
            qids = cat.qid.to_numpy(dtype=object)
            cut = shard_size
            while cut < len(cat) and qids[cut] == qids[cut - 1]:
                cut += 1
            if cut == len(cat):  # the query continues into the next batch: read more first
                buf, n = [cat], len(cat)
                break
            yield cat.iloc[:cut]
            rest = cat.iloc[cut:]
            buf, n = [rest], len(rest)
    if n:
        yield pd.concat(buf)


def chunk_metrics(qrels: pd.DataFrame | None, rows: pd.DataFrame, qids: list[str]) -> pd.DataFrame | None:
    """BM25's per-query metrics of one chunk of candidates (None for a split without qrels)."""
    if qrels is None:
        return None
    return per_query(qrels[qrels.qid.isin(qids)], rows.rename(columns={"bm25": "score"}))


def chunk_result(
    ds: Dataset, index: Any, chunk: tuple[str, list[str]], k: int
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """One chunk of queries: its candidate rows and their per-query BM25 metrics (computed where it runs)."""
    split, qids = chunk
    rows = search_chunk(ds, index, qids, k, split)
    return rows, chunk_metrics(ds.qrels.get(split), rows, qids)


# What the forked search processes read (`searched_chunks`): set before they start, inherited, never pickled
_FORKED: dict[str, Any] = {}


def _forked_chunk(chunk: tuple[str, list[str]]) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    ds, index, k = _FORKED["search"]
    return chunk_result(ds, index, chunk, k)


def searched_chunks(
    ds: Dataset, index: Any, chunks: list[tuple[str, list[str]]], k: int, workers: int
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame | None]]:
    """`chunk_result` of each chunk in order, `workers` at a time: on threads for tantivy (its search runs outside
    Python's lock), on forked processes for bm25s (`forked_pool`: its search and every engine's metrics run in
    Python under the lock, so threads take turns; the processes read the index this process built)."""
    _FORKED["search"] = (ds, index, k)  # before the processes start
    try:
        with forked_pool(workers if isinstance(index, BM25Index) else 1) as forked:
            if forked is not None:
                yield from ordered_submit(forked, _forked_chunk, chunks, 2 * workers)
                return
    finally:
        _FORKED.clear()
    with ThreadPoolExecutor(workers) as pool:
        yield from ordered_submit(pool, lambda c: chunk_result(ds, index, c, k), chunks, 2 * workers)


class CandidatesWriter:
    """candidates.parquet written chunk by chunk (one row group each) into a temp sibling, renamed into place
    only when `close` finds the whole output sound: memory holds one chunk's rows and one metrics row per query,
    never all pairs. A degenerate result (no row, a non-finite score) is refused and the previous file kept."""

    def __init__(self, path: Path, qrels: dict[str, pd.DataFrame]):
        self.path, self.qrels = path, qrels
        self.tmp = path.with_name(path.name + ".tmp")
        self.writer = pq.ParquetWriter(self.tmp, CANDIDATES_SCHEMA)
        self.rows = self.queries = self.short = 0
        self.per_query: dict[str, list[pd.DataFrame]] = {}

    def add(
        self,
        rows: pd.DataFrame,
        qids: list[str],
        split: str,
        k: int | None = None,
        metrics: pd.DataFrame | None = None,
    ) -> None:
        """Write one chunk; `metrics`: its queries' per-query BM25 metrics when already computed (`chunk_metrics`)."""
        bad = ~np.isfinite(rows.bm25.to_numpy(np.float64))
        if bad.any():
            raise DataError(
                f"{int(bad.sum())} BM25 scores are not finite (first: query {rows.qid[bad].iloc[0]!r}): nothing is "
                f"written (the previous candidates.parquet is kept); use retrieval.k1 and retrieval.b in BM25's "
                f"usual ranges"
            )
        self.writer.write_table(pa.Table.from_pandas(rows, schema=CANDIDATES_SCHEMA, preserve_index=False))
        self.rows += len(rows)
        self.queries += len(qids)
        if k is not None:
            self.short += len(qids) - int((rows.groupby("qid").size() >= k).sum())
        if metrics is None:
            metrics = chunk_metrics(self.qrels.get(split), rows, qids)
        if metrics is not None:
            self.per_query.setdefault(split, []).append(metrics)
        release_arrow_memory()  # what the chunk's search and rows freed, back to the system before the next

    def close(self) -> dict[str, dict[str, float]]:
        """Rename the file into place; BM25's metrics per split (queries with a relevant judgement)."""
        self.writer.close()
        if not self.rows:
            self.tmp.unlink(missing_ok=True)
            raise DataError(
                f"BM25 found no candidate for any of the {self.queries} queries: nothing is written (the previous "
                f"candidates.parquet, if any, is kept); check retrieval.fields, retrieval.stopwords and the corpus texts"
            )
        os.replace(self.tmp, self.path)
        out = {}
        for split, frames in self.per_query.items():
            pq_all = pd.concat(frames)
            if len(pq_all):
                out[split] = {k: float(pq_all[k].mean()) for k in pq_all.columns} | {"queries": len(pq_all)}
        return out

    def abort(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


def query_chunks(splits: dict[str, list[str]], size: int) -> list[tuple[str, list[str]]]:
    """(split, queries) of at most `size` queries each, in split order then query order."""
    return [(split, qids[i : i + size]) for split, qids in splits.items() for i in range(0, len(qids), size)]


def write_candidates(ws: Workspace, ds: Dataset, splits: dict[str, list[str]], cfg: DictConfig) -> dict:
    """Every split's queries searched `retrieval.chunk_queries` at a time (here, or on the Dask cluster of
    `retrieval.dask`: the same rows either way), streamed into candidates.parquet; returns BM25's metrics per
    split, the counts and the index's facts. Searched here, the dataset's corpus texts are dropped once the index
    has tokenised them (`build_index(release_texts=True)`): the caller must not need them afterwards."""
    rc = cfg.retrieval
    chunks = query_chunks(splits, rc.chunk_queries)
    k = min(rc.k, len(ds.corpus))
    writer = CandidatesWriter(ws.candidates, ds.qrels)
    try:
        if rc.dask.cluster:
            if rc.engine == "tantivy":  # built once here, opened by every worker
                build_index(ds, rc, ws)
            key = json.dumps(to_container(cfg), default=str)
            with dask_client(rc.dask, "retrieval.dask") as client:
                window = 2 * max(1, len(client.scheduler_info()["workers"]))
                results = ordered_map(client, search_task, chunks, window, key)
                for (split, qids), (rows, per_q) in zip(chunks, results, strict=True):
                    writer.add(rows, qids, split, k, per_q)
            facts = {}
        else:
            t0 = time.perf_counter()
            # only the queries' texts are read from here on
            index = build_index(ds, rc, ws, release_texts=True)
            facts = {
                "index_seconds": round(time.perf_counter() - t0, 2),
                "index_bytes_per_doc": round(index.bytes_per_doc(), 1),
            }
            threads = rc.threads or os.cpu_count() or 1
            for (split, qids), (rows, per_q) in zip(
                chunks, searched_chunks(ds, index, chunks, rc.k, threads), strict=True
            ):
                writer.add(rows, qids, split, k, per_q)
        metrics = writer.close()
    except BaseException:
        writer.abort()
        raise
    if writer.short:
        log.info("%d of %d queries matched fewer than k=%d documents", writer.short, writer.queries, rc.k)
    return {"metrics": metrics, "rows": writer.rows, "queries": writer.queries, **facts}


@functools.lru_cache(maxsize=2)
def _worker_state(key: str) -> tuple[Dataset, Any, Any]:
    """A Dask worker's dataset and index for the config `key` (JSON), built once per worker process."""
    cfg = OmegaConf.create(json.loads(key))
    ds = load_dataset(cfg, texts=False)  # the index reads the corpus's texts from its file, in order
    return ds, build_index(ds, cfg.retrieval, Workspace(Path(cfg.paths.workspace))), cfg.retrieval


def search_task(chunk: tuple[str, list[str]], key: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """One chunk of queries on a Dask worker (the same rows and metrics `chunk_result` gives in this process)."""
    ds, index, rc = _worker_state(key)
    return chunk_result(ds, index, chunk, rc.k)


def run(cfg: DictConfig) -> dict[str, Any]:
    ws = Workspace.from_cfg(cfg)
    with start_run(cfg, stage="candidates") as tracker:
        t0 = time.perf_counter()
        # the corpus's texts are read from its file as the index tokenises them: never held (the queries' are)
        ds = load_dataset(cfg, texts=False)
        splits = queries_per_split(
            ds, list(cfg.retrieval.splits or sorted(ds.qrels, key=lambda s: (s != "train", s)))
        )
        out = write_candidates(ws, ds, splits, cfg)
        metrics = out["metrics"]
        ds_dir = dataset_dir(cfg)
        write_json_atomic(
            fingerprint.record([cfg.retrieval], {"dataset": ds_dir}) | {"dataset_dir": str(ds_dir)},
            ws.candidates_record,
        )
        facts = {k: out[k] for k in ("index_seconds", "index_bytes_per_doc") if k in out}
        write_json_atomic(
            {"bm25": metrics, "k": cfg.retrieval.k, "engine": cfg.retrieval.engine} | facts,
            ws.candidates_metrics,
        )
        seconds = time.perf_counter() - t0
        tracker.log({f"{s}/bm25/{k}": v for s, m in metrics.items() for k, v in m.items()})
        tracker.artifact(ws.candidates, type="candidates")
    print(
        f"candidates ({cfg.retrieval.engine}{', on Dask' if cfg.retrieval.dask.cluster else ''}): {out['rows']} rows "
        f"for {out['queries']} queries -> {ws.candidates} ({seconds:.1f}s"
        + (
            f"; index {facts['index_seconds']}s, {facts['index_bytes_per_doc']} bytes per document)"
            if facts
            else ")"
        )
    )
    for split, m in metrics.items():
        print(
            f"  BM25 {split:>5}: "
            + "  ".join(f"{k}={v:.4f}" for k, v in m.items() if k != "queries")
            + f"  ({m['queries']} queries)"
        )
    return metrics


STAGE = Stage(
    name=lambda cfg: "candidates",
    run=run,
    config=lambda cfg: [data_config(cfg), cfg.retrieval],
    inputs=lambda cfg, ws: {"dataset": dataset_dir(cfg)},
    outputs=lambda cfg, ws: [ws.candidates],
)
