"""The bad-input matrix: every row is one kind of bad input and one test.

Each gets a clear `DistillError` naming the file, row (line) and column or id, with how to fix it; or, where the
input is legitimate but awkward (over-long documents, duplicate candidate pairs), it is handled and counted.
Dataset rows are also run with `data.on_error=drop`: the row is quarantined and counted with its reason, never
dropped silently. (`tests/test_candidates.py` checks that the CLI turns such errors into one line without a
traceback.)
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distill.data.beir import load_beir
from distill.errors import DataError, DistillError
from distill.teacher.engine import ScoringEngine
from distill.teacher.model import load_teacher
from distill.teacher.scoring import dedupe, iter_shards, texts_for
from distill.teacher.soft_labels import read_soft_labels, write_manifest, write_part
from tests.teacher.test_engine import reference_scores


def dataset(root: Path) -> Path:
    root.mkdir()
    docs = [{"_id": f"d{i}", "text": f"document {i} about cats"} for i in range(1, 5)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "cat"}\n{"_id": "q2", "text": "dog"}\n')
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td3\t1\n")
    return root


FILES = {"corpus": "corpus.jsonl", "queries": "queries.jsonl", "qrels": "qrels/test.tsv"}

# (issue row, file, appended line, error on data.on_error=raise, quarantine reason on data.on_error=drop)
DATASET_ROWS = [
    (
        "empty text",
        "corpus",
        b'{"_id": "d9", "text": ""}',
        r"corpus.jsonl:5: document 'd9' has empty text",
        "empty text",
    ),
    (
        "whitespace text",
        "queries",
        b'{"_id": "q9", "text": " \\t "}',
        r"queries.jsonl:3: query 'q9' has empty text",
        "empty text",
    ),
    ("missing id", "corpus", b'{"text": "no id"}', r'corpus.jsonl:5: missing or empty "_id"', "missing _id"),
    (
        "missing query id",
        "queries",
        b'{"_id": "", "text": "x"}',
        r'queries.jsonl:3: missing or empty "_id"',
        "missing _id",
    ),
    (
        "duplicate id",
        "corpus",
        b'{"_id": "d1", "text": "again"}',
        r"corpus.jsonl:5: duplicate _id 'd1' \(first seen on line 1\)",
        "duplicate _id",
    ),
    (
        "duplicate query id",
        "queries",
        b'{"_id": "q1", "text": "again"}',
        r"queries.jsonl:3: duplicate _id 'q1'",
        "duplicate _id",
    ),
    (
        "invalid UTF-8",
        "corpus",
        b'{"_id": "d9", "text": "caf\xe9"}',
        r"corpus.jsonl:5: invalid UTF-8 byte 0xe9",
        "invalid UTF-8",
    ),
    (
        "qrels unknown query",
        "qrels",
        b"q7\td1\t1",
        r"qrels/test.tsv:4: query-id 'q7' is not in queries.jsonl",
        "unknown query id",
    ),
    (
        "qrels unknown document",
        "qrels",
        b"q1\td7\t1",
        r"qrels/test.tsv:4: corpus-id 'd7' is not in corpus.jsonl",
        "unknown corpus id",
    ),
    (
        "duplicate judgement",
        "qrels",
        b"q1\td1\t1",
        r"qrels/test.tsv:4: duplicate judgement for \('q1', 'd1'\)",
        "duplicate judgement",
    ),
]


@pytest.mark.parametrize("row,file,line,error,reason", DATASET_ROWS, ids=[r[0] for r in DATASET_ROWS])
def test_dataset_row_is_an_error_or_a_counted_quarantine(tmp_path, row, file, line, error, reason):
    root = dataset(tmp_path / "ds")
    with (root / FILES[file]).open("ab") as fh:
        fh.write(line + b"\n")
    with pytest.raises(DataError, match=error + r".*data.on_error=drop"):
        load_beir(root)
    ds = load_beir(root, on_error="drop")
    assert ds.quarantine.counts() == {f"{FILES[file]}: {reason}": 1}
    assert "dropped 1 bad rows" in ds.quarantine.summary()


def test_empty_split(tmp_path):
    root = dataset(tmp_path / "ds")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    with pytest.raises(DataError, match=r"qrels/test.tsv of dataset 'ds' is empty"):
        load_beir(root, name="ds").split_qids("test")


def test_100k_character_document_loads_and_scores_like_its_truncation(tmp_path, tiny_model_dir):
    root = dataset(tmp_path / "ds")
    long_text = ("the cat sat on the mat " * 4400)[:99_990] + "end of doc"
    with (root / "corpus.jsonl").open("a") as fh:
        fh.write(json.dumps({"_id": "long", "text": long_text}) + "\n")
    ds = load_beir(root)
    assert len(ds.doc_texts(["long"])[0]) == len(long_text) == 100_000
    ce = load_teacher(str(tiny_model_dir), max_length=64, device="cpu")
    s = ScoringEngine(ce, batch_tokens=512).score(
        ["cat", "cat"], [ds.doc_texts(["long"])[0], long_text[:2_000]]
    )
    assert np.isfinite(s).all() and s[0] == pytest.approx(s[1], abs=1e-6)


def test_document_just_over_max_length_is_truncated_like_transformers(tiny_model_dir):
    ce = load_teacher(str(tiny_model_dir), max_length=64, device="cpu")
    q = "cat on a mat"
    n_q = len(ce.tokenizer(q)["input_ids"])
    fits = 64 - n_q - 1  # [CLS] q [SEP] d [SEP]: document words that still fit (one token each)
    docs = [" ".join(["mat"] * (fits + extra)) for extra in (0, 1, 2)]
    s = ScoringEngine(ce, batch_tokens=512).score([q] * 3, docs)
    np.testing.assert_allclose(s, reference_scores(tiny_model_dir, [q] * 3, docs), atol=1e-5)
    assert s[1] == pytest.approx(s[0], abs=1e-6)  # the extra word was cut, not a crash


def test_duplicate_candidate_pairs_are_dropped_and_counted():
    shard = pd.DataFrame({"qid": ["q1", "q1", "q1"], "docid": ["d1", "d2", "d1"]}, index=[10, 11, 12])
    kept, n = dedupe(shard, "candidates.parquet")
    assert n == 1 and kept.docid.tolist() == ["d1", "d2"]


@pytest.mark.parametrize(
    "frame,error",
    [
        (pd.DataFrame({"qid": ["q1"]}), r"c.parquet: missing column\(s\) \['docid'\]"),
        (
            pd.DataFrame({"qid": ["q1", "q2", "q1"], "docid": ["d1", "d2", "d3"]}),
            r"c.parquet: row 3: qid 'q1'",
        ),
    ],
    ids=["candidates missing column", "candidates not grouped by query"],
)
def test_bad_candidates_file(tmp_path, frame, error):
    frame.to_parquet(tmp_path / "c.parquet")
    with pytest.raises(DataError, match=error):
        list(iter_shards(tmp_path / "c.parquet", 10))


def test_candidate_naming_an_unknown_document(tmp_path):
    ds = load_beir(dataset(tmp_path / "ds"), name="ds")
    shard = pd.DataFrame({"qid": ["q1", "q1"], "docid": ["d1", "d404"]}, index=[0, 1])
    with pytest.raises(DataError, match=r"candidates.parquet: row 2: docid 'd404' is not in corpus.jsonl"):
        texts_for(ds, shard, "candidates.parquet")


SOFT_LABEL_ROWS = [
    (
        "NaN score",
        {"score": [0.5, np.nan]},
        r"part-00000.parquet: 1 non-finite score\(s\).*row 2 \(qid 'q1', docid 'd2'\)",
    ),
    ("inf score", {"score": [np.inf, 0.5]}, r"part-00000.parquet: 1 non-finite score\(s\).*row 1"),
    ("int score column", {"score": [1, 2]}, r"part-00000.parquet: column 'score' has type int64.*float"),
    ("missing column", {}, r"part-00000.parquet: missing column\(s\) \['score'\]"),
]


@pytest.mark.parametrize("row,columns,error", SOFT_LABEL_ROWS, ids=[r[0] for r in SOFT_LABEL_ROWS])
def test_bad_soft_labels_name_the_part_row_and_column(tmp_path, row, columns, error):
    root = tmp_path / "soft_labels"
    root.mkdir()
    sha = write_part(
        pd.DataFrame({"qid": ["q1", "q1"], "docid": ["d1", "d2"], **columns}), root / "part-00000.parquet", {}
    )
    shards = {"00000": {"file": "part-00000.parquet", "rows": 2, "sha256": sha}}
    write_manifest(root, {"identity": {}, "shards": shards, "complete": True})
    with pytest.raises(DataError, match=error):
        read_soft_labels(root)


def test_every_error_is_a_distill_error():
    """The CLI prints DistillErrors as one line (exit 2); anything else would be a traceback."""
    assert issubclass(DataError, DistillError)
