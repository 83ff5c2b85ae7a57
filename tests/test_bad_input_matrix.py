"""The bad-input matrix: every row is one kind of bad input and one test.

Each gets a clear `DistillError` naming the file, row (line) and column or id, with how to fix it; or, where the
input is legitimate but awkward (over-long documents, duplicate candidate pairs), it is handled and counted.
Dataset rows are also run with `data.on_error=drop`: the row is quarantined and counted with its reason, never
dropped silently. (`tests/test_candidates.py` checks that the CLI turns such errors into one line without a
traceback.)
"""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distill.data.beir import load_beir
from distill.errors import ConfigError, DataError, DistillError
from distill.retrieval.candidates import iter_shards
from distill.teacher.engine import ScoringEngine
from distill.teacher.model import load_teacher
from distill.teacher.scoring import dedupe, texts_for
from distill.teacher.scoring import run as run_score
from distill.teacher.soft_labels import read_soft_labels, write_manifest, write_part
from distill.workspace import Workspace
from tests.helpers import reference_scores


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


# ------------------------------------------------------------------ options: every number has a range
def numeric_options():
    """(group key, schema) for every int/float option of every registered schema."""
    import dataclasses

    from distill.schema import STUDENT_SCHEMAS, Config

    out = []

    def walk(cls, prefix):
        for f in dataclasses.fields(cls):
            t = str(f.type)
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{prefix}.{f.name}")
            elif t.split(" |")[0] in ("int", "float"):
                out.append((f"{prefix}.{f.name}", cls))

    for f in dataclasses.fields(Config):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            walk(type(default), f.name)
    for cls in STUDENT_SCHEMAS.values():
        walk(cls, f"student[{cls.__name__}]")
    return sorted(set(out), key=lambda x: x[0])


# a negative value is meaningful for these (a seed; LightGBM's -1 = no depth limit)
NEGATIVE_OK = {"seed", "split_seed", "student[LightGBMConfig].max_depth"}


@pytest.mark.parametrize("key,cls", numeric_options(), ids=[k for k, _ in numeric_options()])
def test_every_numeric_option_refuses_minus_one_by_name(key, cls):
    """`student.max_seconds=-1` once trained one step and replaced a model: every time, step, size and rate
    option of every group is range-checked before anything runs."""
    from distill.config import from_plain
    from distill.errors import ConfigError

    name = key.rpartition(".")[2]
    if name in NEGATIVE_OK or key in NEGATIVE_OK:
        pytest.skip("a negative value is meaningful here")
    required = {"name": "x", "path": "p"} if key.startswith("data.") and name not in ("name", "path") else {}
    with pytest.raises(ConfigError, match=rf"{name}=-1(\.0)?: "):
        from_plain(cls, {name: -1, **required}, key)


@pytest.mark.parametrize(
    "override,message",
    [
        (
            "teacher.train.hidden_size=30",
            r"teacher.train.hidden_size=30: must be a multiple of teacher.train.num_heads=4",
        ),
        ("teacher.train.dropout=1.0", r"teacher.train.dropout=1.0: must be in \[0, 1\)"),
        (
            "retrieval.stopwords=klingon",
            r"retrieval.stopwords='klingon': use null or a bm25s stop-word language",
        ),
        ("retrieval.stemmer=klingon", r"retrieval.stemmer='klingon': use null or a PyStemmer language"),
        ("retrieval.k1=1e308", r"retrieval.k1=1e\+308: must be in \[0, 100\]"),
        ("paths.workspace=", r"paths.workspace='': give a folder"),
        (
            "features.options.reference_time=2300-01-01",
            r"features.options.reference_time='2300-01-01': give an ISO-8601 time",
        ),
        ("dashboard.backend=tensorbord", r"dashboard.backend='tensorbord': use auto, tensorboard or mlflow"),
    ],
)
def test_option_values_are_one_line_before_anything_runs(make_cfg, override, message):
    from distill.config import validate

    extra = ["teacher.train.num_heads=4"] if "hidden_size" in override else []
    with pytest.raises(ConfigError, match=message):
        validate(make_cfg(override, *extra))


def test_a_truncated_soft_label_part_is_one_line(gbdt_ws):
    ws = Workspace.from_cfg(gbdt_ws())
    part = next(ws.soft_labels.glob("part-*.parquet"))
    part.write_bytes(part.read_bytes()[:-100])
    with pytest.raises(DataError, match=rf"{part.name}: its content is not what the manifest recorded"):
        read_soft_labels(ws.soft_labels, ws.candidates)


def test_a_tampered_part_or_a_part_listed_twice_is_refused(gbdt_ws):
    ws = Workspace.from_cfg(gbdt_ws())
    manifest = json.loads((ws.soft_labels / "manifest.json").read_text())
    first = sorted(manifest["shards"])[0]
    twice = dict(manifest, shards={**manifest["shards"], "99999": manifest["shards"][first]})
    write_manifest(ws.soft_labels, twice)
    with pytest.raises(DataError, match=r"lists \['part-00000.parquet'\] under more than one shard"):
        read_soft_labels(ws.soft_labels, ws.candidates)
    write_manifest(ws.soft_labels, manifest)
    part = ws.soft_labels / manifest["shards"][first]["file"]
    df = pd.read_parquet(part)
    write_part(df.assign(score=-df.score), part, {})  # negated scores, same shape
    with pytest.raises(DataError, match="its content is not what the manifest recorded"):
        read_soft_labels(ws.soft_labels, ws.candidates)


@pytest.mark.parametrize("value", ["2300-01-01T00:00:00Z", "0001-01-01"])
def test_a_timestamp_outside_pandas_range_names_the_line(tiny_beir, value):
    root = tiny_beir(
        corpus=[
            {"_id": "d1", "text": "the cat", "timestamp": "2024-01-01"},
            {"_id": "d2", "text": "dogs", "timestamp": value},
        ],
        qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\n",
    )
    with pytest.raises(DataError, match=r"corpus.jsonl:2: unparsable timestamp .*1677-09-21 to 2262-04-11"):
        load_beir(root)
    assert "d2" not in load_beir(root, on_error="drop").corpus.index


def test_fields_naming_no_corpus_field_and_queries_matching_nothing_keep_the_old_candidates(
    tiny_beir, make_cfg
):
    from distill.retrieval.candidates import run as run_candidates

    root = tiny_beir()
    cfg = make_cfg("data=beir", f"data.path={root}")
    run_candidates(cfg)
    good = Workspace.from_cfg(cfg).candidates.read_bytes()
    with pytest.raises(DataError, match=r"the corpus has none of the fields \['body'\] \(retrieval.fields\)"):
        run_candidates(make_cfg("data=beir", f"data.path={root}", "retrieval.fields=[body]"))
    silent = tiny_beir(queries=[{"_id": "q1", "text": "the"}, {"_id": "q2", "text": "a"}], name="stop")
    cfg2 = make_cfg("data=beir", f"data.path={silent}", f"paths.workspace={Workspace.from_cfg(cfg).root}")
    with pytest.raises(
        DataError, match="BM25 found no candidate for any of the 2 queries: nothing is written"
    ):
        run_candidates(cfg2)
    assert Workspace.from_cfg(cfg).candidates.read_bytes() == good


def test_negative_grades_are_read_as_not_relevant_and_metrics_stay_valid_json(tiny_beir, make_cfg):
    from distill.retrieval.candidates import run as run_candidates

    root = tiny_beir(qrels="query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t-2\nq2\td3\t1\n")
    cfg = make_cfg("data=beir", f"data.path={root}")
    assert load_beir(root).qrels["test"].relevance.min() == 0
    run_candidates(cfg)
    metrics = json.loads(
        Workspace.from_cfg(cfg).candidates_metrics.read_text()
    )  # NaN would not parse strictly
    assert all(np.isfinite(v) for m in metrics["bm25"].values() for v in m.values())


def test_a_json_output_never_holds_nan(tmp_path):
    from distill.workspace import write_json_atomic

    with pytest.raises(DataError, match=r"m.json: rankers.bm25.ndcg@10 is not a finite number"):
        write_json_atomic({"rankers": {"bm25": {"ndcg@10": float("nan")}}}, tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


def test_unknown_keys_and_bad_values_on_the_command_line_are_one_line_exit_2(tmp_path):
    import subprocess
    import sys

    from distill.config import PROJECT_ROOT

    for args, line in [
        (["retrieval.kk=3"], r"error: retrieval.kk: no such option of RetrievalConfig; known: \['b', "),
        (
            ["student=xgboost", "student.num_leaves=4"],
            r"error: student.num_leaves: no such option of XGBoostConfig",
        ),
        (["data=nosuch"], r"error: In 'config': Could not find 'data/nosuch'; choose among \['beir', "),
        (
            ["teacher.batch_tokens=abc"],
            r"error: teacher.batch_tokens: Value 'abc' of type 'str' could not be converted",
        ),
    ]:
        proc = subprocess.run(
            [
                sys.executable,
                str(PROJECT_ROOT / "scripts" / "candidates.py"),
                *args,
                f"paths.output_root={tmp_path}",
                "logger=none",
            ],
            capture_output=True,
            text=True,
        )
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert re.match(line, lines[0]), lines[0]


def test_a_copied_workspace_resumes_its_soft_labels(gbdt_ws, tmp_path):
    """The soft labels' identity is the content of what was scored, not paths: a workspace copied elsewhere is
    not refused as "config changed"; teacher-score there finds every shard done."""
    import shutil

    cfg = gbdt_ws()
    copy = tmp_path / "moved"
    shutil.copytree(Workspace.from_cfg(cfg).root, copy)
    summary = run_score(gbdt_ws(f"paths.workspace={copy}"))
    assert summary["scored"] == 0 and summary["skipped"] == summary["pairs"]
