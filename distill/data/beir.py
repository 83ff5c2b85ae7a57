"""The project's one dataset layout, BEIR's, with validation.

    corpus.jsonl            {"_id", "title", "text", "timestamp"?: ISO-8601, other fields kept as columns}
    queries.jsonl           {"_id", "text", "timestamp"?}
    qrels/<split>.tsv       header "query-id corpus-id score", then one judgement per line (integer grade)
    logs/impressions.parquet optional click log: qid, docid, position, clicked, dwell_s, timestamp

Every problem is reported with the file and line at fault; with `on_error="drop"` bad rows are dropped and
counted by reason instead (`Dataset.quarantine`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from distill.data.quarantine import Quarantine
from distill.errors import ConfigError, DataError
from distill.ir.timestamps import RANGE, parse_timestamps
from distill.workspace import release_arrow_memory

log = logging.getLogger(__name__)

CLICK_COLUMNS = {
    "qid": "string",
    "docid": "string",
    "position": "int",
    "clicked": "bool",
    "dwell_s": "float",
    "timestamp": "datetime",
}


# ids hashed at a time when a lookup is made (each block is read as Python strings while it is hashed)
HASH_BLOCK = 1_000_000


class IdPositions:
    """Each asked id's position in a fixed list of string ids (a dataset's docids or qids), -1 where absent.

    Written here because pandas' lookup of string ids in a large index (`Index.get_indexer`) reaches each id's
    string object at a random place in memory: in the features stage it was most of a chunk's time, and its cost
    per row grew 5x from 60,000 to 600,000 documents. This keeps the ids' 64-bit hashes (pandas' `hash_array`)
    sorted, 16 bytes per id, finds the asked ids' hashes by one binary search over them in sorted order, and
    confirms each match by comparing the strings: an absent id, or one whose hash another id shares, is never
    given a wrong position (the rare shared hash is looked up exactly). The asked ids are factorised first, so an
    id asked many times (a query's qid on each of its candidate rows, a click log's ids) is looked up once."""

    def __init__(self, ids: Any):
        # the ids as Arrow strings (the dataset's index already is: no copy), not as Python objects: at 600,000
        # documents those were 39 MiB of the 48 this lookup held, and the hashes are taken a block at a time
        self.ids = pd.array(ids, dtype="str", copy=False)
        hashes = np.concatenate(
            [np.empty(0, np.uint64)]
            + [
                pd.util.hash_array(self.ids[i : i + HASH_BLOCK], categorize=False)
                for i in range(0, len(self.ids), HASH_BLOCK)
            ]
        )
        self.order = np.argsort(hashes, kind="stable")
        self.hashes = hashes[self.order]

    def __len__(self) -> int:
        return len(self.ids)

    def __call__(self, asked: Any) -> np.ndarray:
        if not isinstance(asked, (pd.Series, pd.Index, np.ndarray, pd.api.extensions.ExtensionArray)):
            asked = np.asarray(asked, dtype=object)
        codes, distinct = pd.factorize(asked)  # a missing value (None, NA) has code -1: no position
        if not len(codes) or not len(distinct) or not len(self.ids):
            return np.full(len(codes), -1, dtype=np.int64)
        found = self._distinct(np.asarray(distinct, dtype=object))
        return np.where(codes >= 0, found[codes], -1).astype(np.int64)

    def _distinct(self, asked: np.ndarray) -> np.ndarray:
        """Each of the distinct ids `asked`' position (-1: absent)."""
        h = pd.util.hash_array(asked, categorize=False)
        by_hash = np.argsort(h, kind="stable")  # searching in sorted order walks the table once
        at = np.empty(len(h), dtype=np.int64)
        at[by_hash] = np.searchsorted(self.hashes, h[by_hash])
        at = np.minimum(at, len(self.hashes) - 1)
        pos = self.order[at]
        same_hash = self.hashes[at] == h
        found = same_hash & (np.asarray(self.ids[pos], dtype=object) == asked)
        shared = same_hash & ~found  # another id has this hash: look it up exactly
        out = np.where(found, pos, -1).astype(np.int64)
        if shared.any():
            out[shared] = pd.Index(self.ids).get_indexer(asked[shared])
        return out


class CorpusFile:
    """The corpus.jsonl a dataset was loaded from, read again for the texts the dataset does not hold
    (`load_beir(texts=False)`, `Dataset.drop_texts`): its size and modification time when loaded (a file changed
    since is a `DataError`), the reader that read it (Arrow's where it is well formed, else line by line: the same
    records, `_arrow_frames` / `_line_frames`) and each document's line in it, in corpus order.

    Written here because neither Arrow's nor Python's JSON reading finds given records in a JSONL file: the file
    is read forwards a block at a time, from the block where the last read stopped (a reader that goes through
    the corpus in order, `DocTexts`, reads it once), and from the start for a position before it. Memory holds one
    block's records, not the texts (at 100x the sample world they were about half of the candidates stage's
    dataset)."""

    def __init__(
        self,
        path: Path,
        stamp: tuple[int, int],
        kind: str,
        well_formed: bool,
        lines: np.ndarray,
        fields: Sequence[str],
    ):
        self.path, self.stamp, self.kind, self.well_formed = path, stamp, kind, well_formed
        self.lines = np.asarray(lines, dtype=np.int64)  # ascending: the corpus keeps the file's order
        self.fields = tuple(fields)  # the records' fields, less _id, _line and timestamp
        self._frames: Iterator[pd.DataFrame | None] | None = None
        self._frame: pd.DataFrame | None = None
        self._pid = os.getpid()  # the process whose reading `_frames` is (a forked one reads on its own)

    def __getstate__(self) -> dict[str, Any]:  # a copy (a Dask worker's, a forked process's) reads afresh
        return self.__dict__ | {"_frames": None, "_frame": None}

    def values(self, fields: Sequence[str], where: np.ndarray | slice) -> list[list[Any]]:
        """Each of `fields`' values (fields the file has) for the documents at positions `where`."""
        want = self.lines[where]
        distinct = np.unique(want)
        rows = self._rows(distinct, list(fields)) if len(distinct) else pd.DataFrame(columns=list(fields))
        at = np.searchsorted(distinct, want)
        return [rows[f].to_numpy(dtype=object)[at].tolist() for f in fields]

    def _rows(self, lines: np.ndarray, fields: list[str]) -> pd.DataFrame:
        """The records on `lines` (sorted), their `fields`, read forwards from the block held."""
        if self._frame is None or self._pid != os.getpid() or lines[0] < int(self._frame["_line"].iat[0]):
            self._restart()
        parts = []
        while self._frame is not None:
            held = self._frame["_line"].to_numpy()
            hit = np.isin(held, lines, assume_unique=True)
            if hit.any():
                parts.append(self._frame.loc[hit, fields])
            if held[-1] >= lines[-1]:
                break
            self._advance()
        rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=fields)
        if len(rows) != len(lines):
            self._frame = self._frames = None
            raise DataError(
                f"{self.path}: {len(lines) - len(rows)} document(s) loaded from it are no longer on their lines: "
                f"the file changed since the dataset was loaded; run the stage again"
            )
        return rows

    def _restart(self) -> None:
        st = self.path.stat() if self.path.exists() else None
        if st is None or (st.st_size, st.st_mtime_ns) != self.stamp:
            raise DataError(
                f"{self.path}: changed or removed since the dataset was loaded, and its texts are read from it; "
                f"run the stage again"
            )
        if self.well_formed:
            with self.path.open("rb") as fh:
                head = json.loads(fh.readline())
            self._frames = _arrow_frames(self.path, self.kind, head)
        else:  # the bad lines were reported when the dataset was loaded
            self._frames = _line_frames(self.path, self.kind, Quarantine("drop"))
        self._pid = os.getpid()
        self._advance()

    def _advance(self) -> None:
        """The next block with a record (None past the last)."""
        assert self._frames is not None
        self._frame = next(self._frames, None)
        while self._frame is not None and not len(self._frame):
            self._frame = next(self._frames, None)


@dataclass
class Dataset:
    """A loaded, validated collection. Ids are strings; `corpus` and `queries` are indexed by id."""

    name: str
    corpus: pd.DataFrame  # index docid; columns title, text, timestamp (UTC, NaT when absent), extra fields
    queries: pd.DataFrame  # index qid; columns text, timestamp
    qrels: dict[str, pd.DataFrame]  # split -> columns qid, docid, relevance (int)
    clicks_source: Any = None  # a loaded click log, or the path of one read (and checked) on first use
    quarantine: Quarantine = field(default_factory=Quarantine)
    # where the corpus's texts are read again once the corpus holds them no more (None: they are gone then)
    corpus_file: CorpusFile | None = None

    @property
    def clicks(self) -> pd.DataFrame | None:
        """The click log (qid, docid, position, clicked, dwell_s, timestamp), read and validated the first time a
        stage asks for it: most stages never do, and at scale it is the dataset's largest part (a stage that
        only aggregates it reads it a batch at a time instead: `iter_clicks`)."""
        if isinstance(self.clicks_source, Path):
            self.clicks_source = pd.concat(list(self.iter_clicks()), ignore_index=True)
        return self.clicks_source

    def iter_clicks(
        self, batch_rows: int = 1_000_000, quarantine: Quarantine | None = None
    ) -> Iterator[pd.DataFrame]:
        """The click log `batch_rows` rows at a time, each batch validated as `clicks` is (bad rows named by
        their row number in the file, in `quarantine`, by default the dataset's, which reports them at the end;
        a second pass over the log gives its own): memory holds one batch, not the log. Nothing without a click log."""
        if batch_rows < 1:
            raise ConfigError(f"batch_rows={batch_rows}: a click-log batch needs at least one row")
        src, q = self.clicks_source, self.quarantine if quarantine is None else quarantine
        if isinstance(src, pd.DataFrame):
            for start in range(0, len(src), batch_rows):
                yield src.iloc[start : start + batch_rows]
            return
        if src is None:
            return
        try:
            pf = pq.ParquetFile(src)
        except Exception as e:  # pyarrow raises several types for unreadable files
            raise DataError(
                f"{src}: not a readable Parquet file ({e}). Rewrite the click log as Parquet"
            ) from e
        missing = [c for c in CLICK_COLUMNS if c not in pf.schema_arrow.names]
        if missing:
            raise DataError(f"{src}: missing column(s) {missing}; a click log needs {list(CLICK_COLUMNS)}")
        first = 0
        for batch in pf.iter_batches(batch_size=batch_rows):
            df = batch.to_pandas()
            del batch
            yield _check_clicks(df, src, q, first)
            first += len(df)
            del df
            release_arrow_memory()  # what the batch's reading and use freed, back to the system
        if first == 0:  # a log with no row: one empty batch with the columns
            yield _check_clicks(pf.schema_arrow.empty_table().to_pandas(), src, q)
        if quarantine is None:  # a pass with its own quarantine is not the one that reports
            q.report()

    def judged(self, split: str, stage: str) -> pd.DataFrame:
        """The qrels of `split`, or a one-line error saying how to get them (`stage` needs them)."""
        if split not in self.qrels or self.qrels[split].empty:
            raise DataError(
                f"{stage} needs judged {split} queries, but dataset {self.name!r} has no qrels/{split}.tsv (found: "
                f"{sorted(self.qrels)}); add qrels/{split}.tsv (a dataset judged on test only is split by "
                f"data.test_fraction)"
            )
        return self.qrels[split]

    def split_qids(self, split: str) -> list[str]:
        """Queries of a split that have at least one judgement, in qrels order."""
        if split not in self.qrels:
            raise DataError(
                f"dataset {self.name!r} has no split {split!r} (found: {sorted(self.qrels)}); "
                f"add qrels/{split}.tsv, or choose the splits with retrieval.splits=[...] (null: every split)"
            )
        qids = list(dict.fromkeys(self.qrels[split]["qid"]))
        if not qids:
            raise DataError(f"qrels/{split}.tsv of dataset {self.name!r} is empty: it has no judged query")
        return qids

    def doc_positions(self, docids: Any) -> np.ndarray:
        """Each docid's position in `corpus` (-1: not in it), through an `IdPositions` made once."""
        return self._positions("corpus")(docids)

    def query_positions(self, qids: Any) -> np.ndarray:
        """Each qid's position in `queries` (-1: not in them), through an `IdPositions` made once."""
        return self._positions("queries")(qids)

    def _positions(self, table: str) -> IdPositions:
        index = getattr(self, table).index
        made = self.__dict__.setdefault("_id_positions", {})
        if table not in made or made[table][0] is not index:  # made again if the table was replaced
            made[table] = (index, IdPositions(index))
        return made[table][1]

    def doc_texts(self, docids: Iterable[str], fields: Iterable[str] = ("title", "text")) -> list[str]:
        """Document text for the model and BM25: the fields joined by a space, empty fields skipped. An id the
        corpus lacks, or fields of which the corpus has none, are a `DataError`: never an empty text."""
        docids = list(docids)
        where = self.doc_positions(docids)
        if (where < 0).any():
            missing = [d for d, w in zip(docids, where, strict=True) if w < 0]
            raise DataError(
                f"dataset {self.name!r}: {len(missing)} docid(s) not in corpus.jsonl (first: {missing[:3]}); "
                f"their texts would be empty: the input naming them belongs to another dataset"
            )
        return self.texts_at(where, fields)

    def texts_at(self, where: np.ndarray | slice, fields: Iterable[str] = ("title", "text")) -> list[str]:
        """`doc_texts` of the documents at positions `where` (an array, or a slice: read in place) of the corpus:
        each field from the corpus, or, where the corpus holds it no more, from its file (`CorpusFile`)."""
        asked = list(fields)
        present = [f for f in asked if self.has_field(f)]
        if not present:
            have = sorted(c for c in self.corpus.columns if self.corpus[c].dtype == object)
            have = sorted({*have, *(self.corpus_file.fields if self.corpus_file else ())})
            raise DataError(
                f"dataset {self.name!r}: the corpus has none of the fields {asked} (retrieval.fields); it has {have}"
            )
        on_disk = [f for f in present if f not in self.corpus]
        read: dict[str, list[Any]] = {}
        if on_disk:
            assert self.corpus_file is not None  # `has_field`
            read = dict(zip(on_disk, self.corpus_file.values(on_disk, where), strict=True))
        return self._joined([read[f] if f in read else self.corpus[f].iloc[where].tolist() for f in present])

    def has_field(self, name: str) -> bool:
        """Whether the documents have the field `name`: held by the corpus, or read from its file."""
        return name in self.corpus or (self.corpus_file is not None and name in self.corpus_file.fields)

    @staticmethod
    def _joined(cols: list[list[Any]]) -> list[str]:
        """The fields' values joined by a space (a missing value as empty), stripped. Joined in Python: pandas'
        string arithmetic copies the slice in Arrow at each step, and Arrow's memory pool keeps the pages it frees
        (tokenising a corpus a slice at a time left several hundred MB with it)."""
        fields = [[_text(v) for v in c] for c in cols]
        if len(fields) == 1:
            return [t.strip() for t in fields[0]]
        return [" ".join(vals).strip() for vals in zip(*fields, strict=True)]

    def drop_texts(self, fields: Iterable[str] = ()) -> None:
        """Drop the corpus's text columns (title, text and `fields`) and hand their buffers back to the system: a
        stage that needs the texts only to tokenise them lets them go once they are (they are the dataset's largest
        part). Documents keep their ids, timestamps and other fields; a text asked for afterwards is read from the
        corpus's file (`corpus_file`; a dataset made in memory has none: the texts are gone). Once the texts are
        dropped, this does nothing."""
        texts = {"title", "text", *fields}
        held = [c for c in self.corpus.columns if c in texts]
        if not held:
            return
        self.corpus = self.corpus.drop(columns=held)
        release_arrow_memory()

    def lazy_doc_texts(self, fields: Iterable[str] = ("title", "text")) -> DocTexts:
        """Every document's `doc_texts`, in corpus order, made when read (a slice at a time): for a reader that
        goes through the corpus in chunks, memory holds one chunk's texts rather than a copy of the corpus."""
        return DocTexts(self, tuple(fields))

    def stats(self) -> dict:
        return {
            "docs": len(self.corpus),
            "queries": len(self.queries),
            **{
                f"qrels/{s}": {"queries": int(q.qid.nunique()), "judgements": len(q)}
                for s, q in self.qrels.items()
            },
            # counted a batch at a time, each checked as `clicks` checks it: the log is not held
            "clicks": sum(len(batch) for batch in self.iter_clicks()),
        }


def _text(value: Any) -> str:
    """A field's value as text: a missing one (None, NaN, NA) as empty."""
    if isinstance(value, str):
        return value
    return "" if value is None or pd.isna(value) else str(value)


class DocTexts(Sequence[str]):
    """The corpus's texts as a sequence (`Dataset.lazy_doc_texts`): an index or a slice joins those documents'
    fields when asked."""

    def __init__(self, ds: Dataset, fields: tuple[str, ...]):
        self.ds, self.fields = ds, fields

    def __len__(self) -> int:
        return len(self.ds.corpus)

    def __getitem__(self, i: Any) -> Any:
        # the positions themselves: no id is looked up, and no copy of the slice is made
        if isinstance(i, slice):
            return self.ds.texts_at(slice(*i.indices(len(self))), self.fields)
        return self.ds.texts_at(np.array([np.arange(len(self))[i]]), self.fields)[0]

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self), 50_000):  # a slice at a time, not a document
            yield from self[start : start + 50_000]


# --------------------------------------------------------------------------------------------------- reading


def _lines(path: Path, q: Quarantine) -> Iterator[tuple[int, str]]:
    """(line number, decoded line) for each non-blank line; invalid UTF-8 is reported per line."""
    with path.open("rb") as fh:
        for no, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
                if no == 1:
                    line = line.removeprefix("\ufeff")  # a UTF-8 byte-order mark (Windows editors write one)
            except UnicodeDecodeError as e:
                q.bad(
                    path.name,
                    no,
                    "invalid UTF-8",
                    f"invalid UTF-8 byte 0x{raw[e.start]:02x} at byte {e.start}",
                    "Re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
                )
                continue
            if line.strip():
                yield no, line


RECORDS_PER_FRAME = 100_000  # records parsed into a frame at a time while reading a JSONL file
JSON_BLOCK_BYTES = 1 << 24  # bytes of a JSONL file read and parsed by Arrow at a time
JSON_PARSE_BYTES = 1 << 22  # Arrow's parsing blocks (on its threads); a longer line goes line by line


def _read_jsonl(
    path: Path, kind: str, q: Quarantine, drop: tuple[str, ...] = ()
) -> tuple[pd.DataFrame, bool]:
    """Records of a corpus/queries JSONL file as a DataFrame indexed by `_id`, with a `_line` column, and whether
    Arrow's reader read it (`_well_formed_jsonl`). The fields `drop` are left out of each block as it is read:
    never held for the whole file."""
    if not path.is_file():
        raise DataError(
            f"{path}: file not found. A BEIR dataset folder needs corpus.jsonl, queries.jsonl and "
            f"qrels/<split>.tsv"
        )
    df = _well_formed_jsonl(path, kind, drop)
    well_formed = df is not None
    if df is None:
        df = _jsonl_by_line(path, kind, q, drop)
    if df.empty:
        raise DataError(f"{path}: no valid {kind} in the file")
    # repeated ids found over the whole frame at once (a dict of every id and its line cost ~180 bytes per
    # record while reading: 1.6 GB for MS MARCO's 8.8M passages)
    dup = df["_id"].duplicated(keep="first").to_numpy()
    if dup.any():
        first = df.loc[~dup, ["_id", "_line"]].set_index("_id")["_line"]
        for rid, no in df.loc[dup, ["_id", "_line"]].itertuples(index=False):
            q.bad(
                path.name,
                int(no),
                "duplicate _id",
                f"duplicate _id {rid!r} (first seen on line {int(first[rid])})",
                "Make ids unique or remove the duplicate",
            )
        df = df.loc[~dup]
    df = df.rename(columns={"_id": "docid" if kind == "document" else "qid"}).set_index(
        "docid" if kind == "document" else "qid"
    )
    df["timestamp"], ok = _parse_timestamps(df, path, q)
    return (df if ok.all() else df[ok]), well_formed


def _well_formed_jsonl(path: Path, kind: str, drop: tuple[str, ...] = ()) -> pd.DataFrame | None:
    """The records (`_id`, the fields, `_line`) of a well-formed corpus/queries JSONL file, read by Arrow's JSON
    reader (in C++, a block of lines at a time): one JSON object per line, no blank line, a string `_id` without
    surrounding spaces on every line, `text` (and a document's `title`) strings or null, not both empty, a string
    `timestamp` if any, and every other field a string, or a number, a boolean, an object or a list on every line.
    None for any other file: `_jsonl_by_line` reads it and names each bad line (parsing each line in Python took
    31 of the 38 s of loading the 300x sample world's 1.8M documents). The frame is the one the line reader makes:
    the same columns in the first line's order, missing or null texts empty, less the fields `drop`."""
    import pyarrow as pa

    with path.open("rb") as fh:
        first = fh.readline()
        if first.startswith(b"\xef\xbb\xbf"):  # a byte-order mark: the line reader drops it
            return None
        fh.seek(0)
        newline, last = 0, b"\n"
        while block := fh.read(1 << 24):
            newline += block.count(b"\n")
            last = block[-1:]
    try:
        head = json.loads(first)
        if not isinstance(head, dict):
            return None
        frames = []
        for frame in _arrow_frames(path, kind, head):
            if frame is None:
                return None
            frames.append(frame.drop(columns=[c for c in drop if c in frame]))
    except (ValueError, pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        # malformed JSON or UTF-8, a field whose type changes or that first appears after the first block, a line
        # longer than a block
        return None
    if not frames:
        return None
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if len(df) != newline + (0 if last == b"\n" else 1):
        return None  # a blank line (the line numbers would not be the rows')
    if "timestamp" not in head and df["timestamp"].isna().all():
        # no timestamp in the file (`_arrow_frames`' schema adds the column)
        df = df.drop(columns=["timestamp"])
    return df


def _arrow_frames(path: Path, kind: str, head: dict) -> Iterator[pd.DataFrame | None]:
    """Each block of a JSONL file (`_json_blocks`) read by Arrow's JSON reader, as `_well_formed_batch`'s frame
    with each row's `_line` (its row number: a well-formed file has no blank line), until a block that is not
    well formed (None). Every block is read with the first block's fields and types: a field that changes type or
    first appears later raises Arrow's error, as a streaming reader does.

    A block at a time, and read here: reading the whole file at once holds the file beside its table (2.2 GB for
    the 300x sample world's 1 GB of documents, against 1.3 GB this way), and Arrow's streaming reader
    (`pyarrow.json.open_json`) takes the whole file into its memory pool when it opens it (318 MiB at 100x)."""
    import pyarrow as pa
    import pyarrow.json as pajson

    # a timestamp stays the text it is (Arrow would infer its own type): `_parse_timestamps` reads it
    schema, infer = pa.schema([("timestamp", pa.string())]), "infer"
    line = 1
    for block in _json_blocks(path):
        table = pajson.read_json(
            pa.BufferReader(block),
            read_options=pajson.ReadOptions(block_size=JSON_PARSE_BYTES),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior=infer),
        )
        schema, infer = table.schema, "error"
        frame = _well_formed_batch(table, kind, head)
        del table, block
        if frame is None:
            yield None
            return
        frame["_line"] = np.arange(line, line + len(frame), dtype=np.int64)
        line += len(frame)
        yield frame


def _json_blocks(path: Path) -> Iterator[bytes]:
    """The file's bytes in blocks of whole lines, `JSON_BLOCK_BYTES` read at a time (a line longer than that
    joins the next read)."""
    with path.open("rb") as fh:
        rest = b""
        while read := fh.read(JSON_BLOCK_BYTES):
            block = rest + read if rest else read
            cut = block.rfind(b"\n") + 1
            rest = block[cut:]
            if cut:
                yield block[:cut]
        if rest:
            yield rest


def _well_formed_batch(table: Any, kind: str, head: dict) -> pd.DataFrame | None:
    """One block of `_well_formed_jsonl`'s file as the line reader's frame, or None where it is not well formed."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table.validate(full=True)  # invalid UTF-8 (the JSON reader lets it through)
    if "_id" not in table.column_names:
        return None
    ids = table["_id"]
    if (
        not pa.types.is_string(ids.type)
        or ids.null_count
        or pc.any(pc.equal(pc.utf8_length(ids), 0)).as_py()
        or not pc.all(pc.equal(pc.utf8_trim_whitespace(ids), ids)).as_py()
    ):
        return None
    texts = ("text", "title") if kind == "document" else ("text",)
    plain = (
        pa.types.is_integer,
        pa.types.is_floating,
        pa.types.is_boolean,
        pa.types.is_struct,
        pa.types.is_list,
    )
    for name in table.column_names:
        col = table[name]
        if name in texts:
            ok = pa.types.is_string(col.type) or pa.types.is_null(col.type)
        else:
            # a field missing on some lines is NaN in the line reader's frame, not Arrow's null
            ok = pa.types.is_string(col.type) or (any(t(col.type) for t in plain) and not col.null_count)
        if not ok:
            return None
    for name in texts:  # a null or missing field is empty text, as the line reader makes it
        if name in table.column_names:
            filled = table[name].cast(pa.string()).fill_null("")
            table = table.set_column(table.column_names.index(name), name, filled)
        else:
            table = table.append_column(name, pa.array([""] * table.num_rows, pa.string()))
    empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(table["text"])), 0)
    if kind == "document":
        empty = pc.and_(empty, pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(table["title"])), 0))
    if pc.any(empty).as_py():
        return None
    order = [c for c in head if c in table.column_names]
    return table.select(order + [c for c in table.column_names if c not in order]).to_pandas()


def _jsonl_by_line(path: Path, kind: str, q: Quarantine, drop: tuple[str, ...] = ()) -> pd.DataFrame:
    """The records (`_id`, the fields, `_line`) of a corpus/queries JSONL file read line by line, each bad line
    reported and left out, less the fields `drop`."""
    frames = [f.drop(columns=[c for c in drop if c in f]) for f in _line_frames(path, kind, q)]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _line_frames(path: Path, kind: str, q: Quarantine) -> Iterator[pd.DataFrame]:
    """`_jsonl_by_line`'s records, `RECORDS_PER_FRAME` at a time (the last frame possibly empty)."""
    records: list[dict] = []
    for no, line in _lines(path, q):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            q.bad(
                path.name,
                no,
                "malformed JSON",
                f"malformed JSON ({e.msg} at column {e.colno})",
                "Fix or remove the line: each line must be one JSON object",
            )
            continue
        if not isinstance(rec, dict):
            q.bad(
                path.name,
                no,
                "malformed JSON",
                f"expected a JSON object, got {type(rec).__name__}",
                "Each line must be one JSON object",
            )
            continue
        if "_id" not in rec or rec["_id"] is None or str(rec["_id"]).strip() == "":
            q.bad(path.name, no, "missing _id", 'missing or empty "_id"', f'Give every {kind} a unique "_id"')
            continue
        rid = str(rec["_id"]).strip()
        text = rec.get("text")
        title = rec.get("title") if kind == "document" else None
        if (text is not None and not isinstance(text, str)) or (
            title is not None and not isinstance(title, str)
        ):
            q.bad(
                path.name,
                no,
                "non-string text",
                f'{kind} {rid!r}: "text"/"title" must be strings',
                "Store text as a JSON string",
            )
            continue
        if not (text or "").strip() and not (title or "").strip():
            q.bad(
                path.name,
                no,
                "empty text",
                f"{kind} {rid!r} has empty text",
                f"Give the {kind} some text or remove it",
            )
            continue
        rec["_id"] = rid
        rec["text"] = text or ""
        if kind == "document":
            rec["title"] = title or ""
        rec["_line"] = no
        records.append(rec)
        if len(records) == RECORDS_PER_FRAME:  # Python dicts cost far more than a frame's columns
            yield pd.DataFrame.from_records(records)
            records = []
    yield pd.DataFrame.from_records(records)


def _parse_timestamps(df: pd.DataFrame, path: Path, q: Quarantine) -> tuple[pd.Series, pd.Series]:
    """UTC timestamps from an optional ISO-8601 `timestamp` field, and the mask of rows to keep
    (unparsable values are bad rows)."""
    keep = pd.Series(True, index=df.index)
    if "timestamp" not in df:
        return pd.Series(pd.NaT, index=df.index, dtype="datetime64[ns, UTC]"), keep
    raw = df["timestamp"]
    parsed = parse_timestamps(raw)
    bad = parsed.isna() & raw.notna()
    for rid in df.index[bad.to_numpy()]:
        q.bad(
            path.name,
            int(df.at[rid, "_line"]),
            "bad timestamp",
            f"unparsable timestamp {df.at[rid, 'timestamp']!r}",
            f"Use ISO-8601 within the range {RANGE}, e.g. 2024-05-01T12:00:00Z",
        )
        keep[rid] = False
    return parsed, keep


QRELS_PER_FRAME = 250_000  # judgements parsed into a frame at a time


def _known(values: pd.Series, ids: Any) -> np.ndarray:
    """Which `values` are among `ids`: Arrow's hash lookup (pandas' `isin` against a string index took 16x as
    long: 2.6 s for 1.4M judgements against 600,000 document ids)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = pc.is_in(
        pa.array(values, type=pa.large_string()), value_set=pa.array(ids, type=pa.large_string())
    )
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)


def _read_qrels(path: Path, corpus_ids: Any, query_ids: Any, q: Quarantine) -> pd.DataFrame:
    """The judgements of a qrels file. Each line's own form (columns, an integer grade) is checked as it is read;
    what needs the whole file (known ids, a pair judged twice) is checked on the frame at once, the offending
    lines reported in line order: per-line Python sets and dicts of pairs cost ~250 bytes per judgement."""
    df = _well_formed_qrels(path)
    if df is None:
        df = _qrels_by_line(path, q)
    return _checked_qrels(df, f"qrels/{path.name}", corpus_ids, query_ids, q)


def _well_formed_qrels(path: Path) -> pd.DataFrame | None:
    """The judgements (qid, docid, relevance, line) of a well-formed qrels file, read at once by Arrow's CSV
    reader: the header `query-id<TAB>corpus-id<TAB>score`, then three tab-separated fields per line, integer grades,
    no blank line and no space around a field. None for any other file: `_qrels_by_line` reads it and names each
    bad line (parsing each line in Python took 6.4 s for the 100x sample world's 2M judgements)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    if data.partition(b"\n")[0].rstrip(b"\r").split(b"\t") != [b"query-id", b"corpus-id", b"score"]:
        return None
    try:
        table = pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(skip_rows=1, column_names=["qid", "docid", "relevance"]),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(
                column_types={"qid": pa.string(), "docid": pa.string(), "relevance": pa.int64()}
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a line with other fields, a grade that is not an integer
        return None
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    # an empty grade; a blank line (the line numbers would not be the rows')
    if table["relevance"].null_count or table.num_rows + 1 != lines:
        return None
    for col in ("qid", "docid"):
        if not pc.all(pc.equal(pc.utf8_trim_whitespace(table[col]), table[col])).as_py():
            return None
    df = table.to_pandas()
    return df.astype({"qid": "string", "docid": "string", "relevance": "int64"}).assign(
        line=np.arange(2, len(df) + 2, dtype=np.int64)
    )


def _qrels_by_line(path: Path, q: Quarantine) -> pd.DataFrame:
    """The judgements (qid, docid, relevance, line) of a qrels file read line by line, each line's own form
    (columns, an integer grade) checked as it is read."""
    name = f"qrels/{path.name}"
    lines = _lines(path, q)
    first = next(lines, None)
    if first is None:
        raise DataError(
            f"{path}: empty qrels file; it needs the header 'query-id corpus-id score' and judgements"
        )
    no, header = first
    if header.split()[:1] != ["query-id"]:
        raise DataError(
            f"{path}:{no}: expected the header line 'query-id<TAB>corpus-id<TAB>score', got "
            f"{header.strip()[:60]!r}. Add the header (BEIR layout)"
        )
    cols: tuple[list[str], list[str], list[int], list[int]] = ([], [], [], [])
    frames: list[pd.DataFrame] = []

    def flush() -> None:
        frames.append(
            pd.DataFrame({"qid": cols[0], "docid": cols[1], "relevance": cols[2], "line": cols[3]}).astype(
                {"qid": "string", "docid": "string", "relevance": "int64", "line": "int64"}
            )
        )
        for c in cols:
            c.clear()

    qids, docids, rels, nos = cols
    for no, line in lines:
        parts = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
        if len(parts) != 3:
            q.bad(
                name,
                no,
                "wrong column count",
                f"expected 3 columns (query-id corpus-id score), got {len(parts)}",
                "Use one judgement per line, tab-separated",
            )
            continue
        qid, docid, score = parts[0].strip(), parts[1].strip(), parts[2].strip()
        try:
            rel_f = float(score)
        except ValueError:
            q.bad(
                name,
                no,
                "non-numeric relevance",
                f"non-numeric relevance {score!r}",
                "Relevance must be an integer grade such as 0, 1, 2",
            )
            continue
        if not math.isfinite(rel_f) or rel_f != int(rel_f):
            q.bad(
                name,
                no,
                "non-integer relevance",
                f"relevance {score!r} is not an integer grade",
                "Relevance must be an integer grade such as 0, 1, 2",
            )
            continue
        qids.append(qid)
        docids.append(docid)
        rels.append(int(rel_f))
        nos.append(no)
        if len(cols[0]) == QRELS_PER_FRAME:
            flush()
    flush()
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    frames.clear()
    return df


def _checked_qrels(
    df: pd.DataFrame, name: str, corpus_ids: Any, query_ids: Any, q: Quarantine
) -> pd.DataFrame:
    """The judgements whose ids the dataset holds, each pair once (what needs the whole file is checked on the
    frame at once, the offending lines reported in line order), negative grades read as 0."""
    unknown_q = ~_known(df["qid"], query_ids)
    unknown_d = ~_known(df["docid"], corpus_ids) & ~unknown_q
    known = ~(unknown_q | unknown_d)
    dup = np.zeros(len(df), dtype=bool)
    dup[known] = df.loc[known].duplicated(["qid", "docid"], keep="first").to_numpy()
    bad = unknown_q | unknown_d | dup
    if bad.any():
        firsts = (
            df.loc[known & ~dup, ["qid", "docid", "line"]].set_index(["qid", "docid"])["line"]
            if dup.any()
            else None
        )
        for i in np.flatnonzero(bad):  # in line order: the frame is in the file's order
            qid, docid, no = str(df.at[i, "qid"]), str(df.at[i, "docid"]), int(df.at[i, "line"])
            if unknown_q[i]:
                q.bad(
                    name,
                    no,
                    "unknown query id",
                    f"query-id {qid!r} is not in queries.jsonl",
                    "Add the query to queries.jsonl or remove the judgement",
                )
            elif unknown_d[i]:
                q.bad(
                    name,
                    no,
                    "unknown corpus id",
                    f"corpus-id {docid!r} is not in corpus.jsonl",
                    "Add the document to corpus.jsonl or remove the judgement",
                )
            else:
                assert firsts is not None
                q.bad(
                    name,
                    no,
                    "duplicate judgement",
                    f"duplicate judgement for ({qid!r}, {docid!r}) (first on line {int(firsts[(qid, docid)])})",
                    "Keep one judgement per query-document pair",
                )
        df = df.loc[~bad].reset_index(drop=True)
    negative = int((df["relevance"] < 0).sum())
    if negative:  # TREC's convention: a negative grade is judged not relevant (e.g. -2 for spam)
        log.warning("%s: %d judgement(s) with a negative grade are read as 0 (not relevant)", name, negative)
        df["relevance"] = df["relevance"].clip(lower=0)
    return df.drop(columns=["line"])


def _check_clicks(df: pd.DataFrame, path: Path, q: Quarantine, first: int = 0) -> pd.DataFrame:
    """One batch of the click log (rows `first`+1 on of the file) with its types set and its bad rows dropped
    (each named by its row number) or refused, as `q` says."""
    df = df.copy()
    df["qid"] = df["qid"].astype(str).astype("string")
    df["docid"] = df["docid"].astype(str).astype("string")
    for col in ("position", "dwell_s"):
        if not pd.api.types.is_numeric_dtype(df[col]):
            raise DataError(f"{path}: column {col!r} must be numeric, got {df[col].dtype}")
    df["timestamp"] = parse_timestamps(df["timestamp"])
    position = df["position"].to_numpy(dtype=float)
    checks = [
        (
            df["timestamp"].isna().to_numpy(),
            "bad timestamp",
            "missing or unparsable timestamp",
            "Give each row an ISO-8601 timestamp",
        ),
        (
            ~(np.isfinite(position) & (position >= 1) & (position == np.round(position))),
            "bad position",
            "position must be a whole number >= 1 (1 = the top result)",
            "Fix or remove the row",
        ),
        (
            ~(df["dwell_s"].to_numpy(dtype=float) >= 0),
            "bad dwell_s",
            "dwell_s must be >= 0 seconds",
            "Fix or remove the row",
        ),
    ]
    bad = np.zeros(len(df), dtype=bool)
    for mask, reason, detail, fix in checks:
        for idx in np.flatnonzero(mask & ~bad):  # one reason per row, rows numbered from 1
            q.bad(path.name, None, reason, f"row {first + int(idx) + 1}: {detail}", fix)
        bad |= mask
    df = df[~bad]
    df["position"] = df["position"].astype("int64")
    df["clicked"] = df["clicked"].astype(bool)
    return df.reset_index(drop=True)


# a document's text fields (every document has both: a missing one is empty)
CORPUS_TEXTS = ("title", "text")


def load_beir(
    path: str | Path, name: str | None = None, on_error: str = "raise", texts: bool = True
) -> Dataset:
    """Load and validate a dataset folder in BEIR layout. `texts=False`: the corpus holds no title or text (each
    block of corpus.jsonl is read, checked and let go of them); a stage that reads them only in order, to
    tokenise them, reads them again from the file (`CorpusFile`)."""
    root = Path(path)
    if not root.is_dir() or not any((root / n).exists() for n in ("corpus.jsonl", "queries.jsonl", "qrels")):
        raise DataError(
            f"{root}: dataset folder not found (or it holds none of the BEIR files). Point data.path at a folder "
            f"with corpus.jsonl, queries.jsonl and qrels/<split>.tsv"
        )
    q = Quarantine(on_error)
    path = root / "corpus.jsonl"
    # stamped before reading: a file changed while it is read is not the one read
    st = path.stat() if path.is_file() else None
    corpus, well_formed = _read_jsonl(path, "document", q, () if texts else CORPUS_TEXTS)
    fields = {*(c for c in corpus.columns if c not in ("_line", "timestamp")), *CORPUS_TEXTS}
    assert st is not None  # `_read_jsonl` refuses a missing file
    stamp = (st.st_size, st.st_mtime_ns)
    corpus_file = CorpusFile(path, stamp, "document", well_formed, corpus["_line"].to_numpy(), sorted(fields))
    corpus = corpus.drop(columns=["_line"])
    queries = _read_jsonl(root / "queries.jsonl", "query", q)[0].drop(columns=["_line"])
    qrels_dir = root / "qrels"
    files = sorted(qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []
    if not files:
        raise DataError(
            f"{qrels_dir}: no qrels/<split>.tsv file. Add at least one split, e.g. qrels/test.tsv"
        )
    qrels = {f.stem: _read_qrels(f, corpus.index, queries.index, q) for f in files}
    clicks_path = root / "logs" / "impressions.parquet"
    ds = Dataset(
        name or root.name,
        corpus,
        queries,
        qrels,
        clicks_path if clicks_path.exists() else None,
        q,
        corpus_file,
    )
    q.report()
    release_arrow_memory()  # what reading the files held in Arrow's pool (about 100 MB at 600,000 documents)
    return ds


# --------------------------------------------------------------------------------------------------- writing


def write_beir(
    root: str | Path,
    corpus: Iterable[dict],
    queries: Iterable[dict],
    qrels: Mapping[str, Iterable[tuple[str, str, int]]],
) -> Path:
    """Write a dataset in BEIR layout. `corpus`/`queries` are dicts with `_id`, `text` (+ `title`, `timestamp`...)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "corpus.jsonl", corpus)
    write_jsonl(root / "queries.jsonl", queries)
    write_qrels(root, qrels)
    return root


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """One JSON object per line, as BEIR's corpus.jsonl and queries.jsonl hold them; `rows` is read as it is
    written (a generator's records are never all held)."""
    with path.open("w", encoding="utf-8") as fh:
        for rec in rows:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def write_qrels(root: Path, qrels: Mapping[str, Iterable[tuple[str, str, int]]]) -> None:
    """qrels/<split>.tsv of a BEIR folder: a header, then query-id, corpus-id, score per judgement."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    for split, judgements in qrels.items():
        with (root / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as fh:
            fh.write("query-id\tcorpus-id\tscore\n")
            for qid, docid, rel in judgements:
                fh.write(f"{qid}\t{docid}\t{int(rel)}\n")
