"""The GBDT students' training rows, read from features.parquet a row group at a time.

The float matrix of every training row is never built: LightGBM takes the rows through a `lightgbm.Sequence` (its
bins come from a sample of rows, then the rows are pushed in batches) and XGBoost through an `xgboost.DataIter`
into a `QuantileDMatrix`; both keep only their binned copy (about a byte per feature and row). What this module
holds per training row is its position in the file, its query, its teacher score and target: integers and floats,
never the ids as strings.

Written by hand, because no library does it without holding every pair: the join of the soft labels to the
feature rows. pandas' merge on (qid, docid) strings holds both sides' keys as strings and a hash table over them;
here both sides are coded as integers (queries and documents numbered in the order the feature rows first name
them), the soft labels are read a row group at a time into (key, score) arrays, and the join is a sort and a
binary search.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distill.errors import DataError
from distill.ir.split import held_out
from distill.students.coverage import check_coverage
from distill.teacher.ensemble import normalise
from distill.teacher.soft_labels import duplicate_pairs
from distill.workspace import release_arrow_memory

FRAME_ROWS = 65_536  # an in-memory frame is read in slices of this many rows, as a file is in row groups
ID_COLUMNS = ("qid", "docid", "split")


class Codes:
    """Ids numbered in the order they are first added (an index of the distinct ids only)."""

    def __init__(self) -> None:
        self.index = pd.Index([], dtype="str")

    def add(self, values: Any) -> np.ndarray:
        """The codes of `values`, numbering the ones not seen before."""
        inverse, uniq = pd.factorize(pd.Index(values, dtype="str"))
        at = self.index.get_indexer(uniq)
        new = at < 0
        if new.any():
            at[new] = len(self.index) + np.arange(int(new.sum()))
            self.index = self.index.append(uniq[new])
        return at[inverse].astype(np.int64)

    def get(self, values: Any) -> np.ndarray:
        """The codes of `values`, -1 for an id never added."""
        return self.index.get_indexer(pd.Index(values, dtype="str")).astype(np.int64)

    def __len__(self) -> int:
        return len(self.index)


class RowSource:
    """Feature rows in blocks: a Parquet file's row groups, or an in-memory frame's slices of FRAME_ROWS."""

    def __init__(self, data: Path | pd.DataFrame) -> None:
        self.frame: pd.DataFrame | None = None
        if isinstance(data, pd.DataFrame):
            self.frame = data
            n = len(data)
            sizes = [min(FRAME_ROWS, n - a) for a in range(0, n, FRAME_ROWS)]
            self.columns = list(data.columns)
        else:
            import pyarrow.parquet as pq

            self.file = pq.ParquetFile(data)
            sizes = [self.file.metadata.row_group(i).num_rows for i in range(self.file.num_row_groups)]
            self.columns = list(self.file.schema_arrow.names)
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])

    @property
    def blocks(self) -> int:
        return len(self.starts) - 1

    def block(self, i: int, columns: list[str]) -> pd.DataFrame:
        if self.frame is not None:
            return self.frame.iloc[int(self.starts[i]) : int(self.starts[i + 1])][columns]
        release_arrow_memory()  # the previous block's buffers, back to the system
        return self.file.read_row_group(i, columns=columns).to_pandas()


class FeatureMatrix:
    """The rows of a `RowSource` at `positions` (in that order), `names` columns as float32, read a block at a time
    and the last block kept: rows asked for in file order read each block once."""

    def __init__(self, source: RowSource, names: list[str], positions: np.ndarray) -> None:
        self.source, self.names, self.positions = source, names, positions
        self._cached: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.positions)

    def _block(self, i: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != i:
            self._cached = None  # the old block is let go before the next is read
            df = self.source.block(i, self.names)
            self._cached = (i, np.column_stack([df[n].to_numpy(np.float32) for n in self.names]))
        return self._cached[1]

    def take(self, at: np.ndarray) -> np.ndarray:
        """Rows `at` (indices into `positions`)."""
        pos = self.positions[at]
        out = np.empty((len(pos), len(self.names)), np.float32)
        block = np.searchsorted(self.source.starts, pos, side="right") - 1
        for i in dict.fromkeys(block.tolist()):  # the blocks in the order first needed
            mine = block == i
            out[mine] = self._block(i)[pos[mine] - self.source.starts[i]]
        return out

    def rows(self, start: int, stop: int) -> np.ndarray:
        return self.take(np.arange(start, stop))

    def row(self, i: int) -> np.ndarray:
        pos = int(self.positions[i])
        if self._cached is not None:
            b = self._cached[0]
            if self.source.starts[b] <= pos < self.source.starts[b + 1]:
                return self._cached[1][pos - self.source.starts[b]].copy()
        return self.take(np.array([i]))[0]

    def to_numpy(self) -> np.ndarray:
        """Every row at once (the Dask fit, which partitions arrays, takes them so)."""
        return self.rows(0, len(self))


@dataclass
class TrainingRows:
    """The rows that learn, grouped by query in the order the file first names the queries (file order when each
    query's rows are contiguous, as the features stage writes them)."""

    train: np.ndarray  # positions in the source of the train side's rows
    val: np.ndarray  # ... and of the validation side's
    target: np.ndarray  # float64, the train side's blended targets
    score_val: np.ndarray  # float64, the validation side's teacher scores
    sizes: np.ndarray  # rows per train query, in order
    sizes_val: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.train) + len(self.val)


def scored_rows(
    source: RowSource, soft: Iterable[pd.DataFrame], where: Path | str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Codes, Codes]:
    """The train-split rows of `source`: (positions, pair keys (query code x the number of documents + document
    code), teacher scores with NaN where a row has none, the queries' codes, the documents' codes). The soft labels
    are read a row group at a time; of them only the pairs of train rows are kept, as integer keys; a pair given
    twice is refused."""
    queries, docs = Codes(), Codes()
    pos, qc, dc = [], [], []
    for i in range(source.blocks):
        block = source.block(i, list(ID_COLUMNS))
        train = (block.split == "train").to_numpy()
        if train.any():
            pos.append(source.starts[i] + np.flatnonzero(train))
            qc.append(queries.add(block.qid.to_numpy()[train]))
            dc.append(docs.add(block.docid.to_numpy()[train]))
    if not pos:
        raise DataError(
            "features.parquet has no train-split candidate: the GBDT student learns from train queries; give the "
            "dataset a train split (qrels/train.tsv) and re-run `make candidates` (retrieval.splits=null: all)"
        )
    n_docs = max(len(docs), 1)
    skeys, sscores = [], []
    for part in soft:
        q, d = queries.get(part.qid.to_numpy()), docs.get(part.docid.to_numpy())
        known = (q >= 0) & (d >= 0)
        skeys.append(q[known] * n_docs + d[known])
        sscores.append(part.score.to_numpy(np.float32)[known])
    keys = np.concatenate(skeys) if skeys else np.zeros(0, np.int64)
    scores = np.concatenate(sscores) if sscores else np.zeros(0, np.float32)
    del skeys, sscores
    order = np.argsort(keys, kind="stable")
    keys, scores = keys[order], scores[order]
    del order
    twice = np.flatnonzero(keys[1:] == keys[:-1])
    if len(twice):
        k = int(keys[twice[0]])
        raise DataError(
            duplicate_pairs(Path(where), len(twice), queries.index[k // n_docs], docs.index[k % n_docs])
        )
    positions, qcodes, dcodes = np.concatenate(pos), np.concatenate(qc), np.concatenate(dc)
    want = qcodes * n_docs + dcodes
    del qcodes, dcodes
    score = np.full(len(want), np.nan)
    if len(keys):
        at = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
        found = keys[at] == want
        score[found] = scores[at[found]]
    return positions, want, score, queries, docs


def training_rows(
    source: RowSource,
    soft: Iterable[pd.DataFrame],
    qrels: pd.DataFrame,
    alpha: float,
    min_coverage: float,
    val_fraction: float,
    seed: int,
    seen: set[str] = frozenset(),  # type: ignore[assignment]
    where: Path | str = "soft_labels",
) -> TrainingRows:
    """The rows that learn: the train-split rows of queries whose every candidate has a teacher score
    (`coverage.check_coverage`) and that no stacked student saw (`seen`), grouped by query, split query-wise into
    train and validation (`held_out`), with the target alpha * teacher + (1 - alpha) * human grade, each z-scored
    per query when alpha < 1."""
    positions, keys, score, queries, docs = scored_rows(source, soft, where)
    n_docs = max(len(docs), 1)
    qcodes = keys // n_docs
    unscored = np.bincount(qcodes[np.isnan(score)], minlength=len(queries)) > 0
    check_coverage(int((~unscored).sum()), len(queries), min_coverage, complete=True)
    keep = ~unscored
    if seen:
        codes = queries.get(sorted(seen))
        keep[codes[codes >= 0]] = False
        if not keep.any():
            raise DataError(
                "features.students: every train query was seen by a stacked student, so there is nothing "
                "leak-free to learn from; retrain them with student.stack_holdout=0.3 (the same share for all)"
            )
    kept = np.flatnonzero(keep[qcodes])
    kept = kept[np.argsort(qcodes[kept], kind="stable")]  # grouped by query; file order when already grouped
    positions, keys, qcodes, score = positions[kept], keys[kept], qcodes[kept], score[kept]
    del kept
    target = score
    if alpha < 1:
        q = pd.Series(qcodes)
        t = normalise(pd.Series(score), q, "zscore")
        human = np.zeros(len(score))
        if len(qrels):
            qk, dk = queries.get(qrels.qid.to_numpy()), docs.get(qrels.docid.to_numpy())
            ok = (qk >= 0) & (dk >= 0)
            rel = pd.Series(qrels.relevance.to_numpy(float)[ok], index=qk[ok] * n_docs + dk[ok])
            human = rel.reindex(keys).fillna(0).to_numpy(float)
        target = np.asarray(
            alpha * t + (1 - alpha) * normalise(pd.Series(human), q, "zscore"), dtype=np.float64
        )
    is_val = held_out(queries.index, val_fraction, seed)[qcodes]
    sizes = np.unique(qcodes[~is_val], return_counts=True)[1]
    sizes_val = np.unique(qcodes[is_val], return_counts=True)[1]
    return TrainingRows(
        train=positions[~is_val],
        val=positions[is_val],
        target=target[~is_val],
        score_val=score[is_val],
        sizes=sizes,
        sizes_val=sizes_val,
    )


def lightgbm_rows(matrix: FeatureMatrix, batch_rows: int) -> Any:
    """`matrix` as a `lightgbm.Sequence`: LightGBM reads its bin sample row by row (in increasing order) and then
    every row in batches of `batch_rows`."""
    import lightgbm as lgb

    class Rows(lgb.Sequence):  # type: ignore[misc]
        batch_size = batch_rows

        def __len__(self) -> int:
            return len(matrix)

        def __getitem__(self, idx: Any) -> np.ndarray:
            if isinstance(idx, slice):
                start, stop, _ = idx.indices(len(matrix))
                return matrix.rows(start, stop)
            if isinstance(idx, (list, np.ndarray)):
                return matrix.take(np.asarray(idx))
            return matrix.row(int(idx)).astype(np.float64)  # LightGBM's bin sample takes doubles

    return Rows()


def xgboost_batches(matrix: FeatureMatrix, label: np.ndarray, sizes: np.ndarray, batch_rows: int) -> Any:
    """`matrix` as an `xgboost.DataIter` of about `batch_rows` rows per batch, each cut at a query's end (query ids
    0, 1, ... in order), for a `QuantileDMatrix`."""
    import xgboost as xgb

    ends = np.concatenate([[0], np.cumsum(sizes)])
    cuts = [0]  # query positions where a batch starts: whole queries per batch
    for q in range(1, len(sizes) + 1):
        if ends[q] - ends[cuts[-1]] >= batch_rows or q == len(sizes):
            cuts.append(q)

    class Batches(xgb.DataIter):  # type: ignore[misc]
        def __init__(self) -> None:
            self.at = 0
            super().__init__(release_data=True)

        def next(self, input_data: Any) -> bool:
            if self.at + 1 >= len(cuts):
                return False
            q0, q1 = cuts[self.at], cuts[self.at + 1]
            a, b = int(ends[q0]), int(ends[q1])
            qid = np.repeat(np.arange(q0, q1, dtype=np.int64), sizes[q0:q1])
            input_data(data=matrix.rows(a, b), label=label[a:b], qid=qid)
            self.at += 1
            return True

        def reset(self) -> None:
            self.at = 0

    return Batches()


__all__ = [
    "Codes",
    "FeatureMatrix",
    "RowSource",
    "TrainingRows",
    "lightgbm_rows",
    "training_rows",
    "xgboost_batches",
]
