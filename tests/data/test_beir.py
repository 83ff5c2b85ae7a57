import pandas as pd
import pytest

from distill.data.beir import load_beir
from distill.errors import DataError
from tests.conftest import write_jsonl


def test_loads_valid_folder(tiny_beir):
    ds = load_beir(tiny_beir())
    assert list(ds.corpus.index) == ["d1", "d2", "d3", "d4"]
    assert ds.corpus.loc["d1", "timestamp"] == pd.Timestamp("2024-01-02", tz="UTC")
    assert pd.isna(ds.corpus.loc["d2", "timestamp"])
    assert ds.split_qids("test") == ["q1", "q2"]
    assert ds.qrels["test"]["relevance"].tolist() == [2, 1, 1]
    assert ds.doc_texts(["d1", "d3"]) == ["Cats the cat sat on the mat", "stock markets fell sharply today"]


def test_missing_folder_and_files(tmp_path, tiny_beir):
    with pytest.raises(DataError, match="dataset folder not found"):
        load_beir(tmp_path / "nope")
    root = tiny_beir()
    (root / "queries.jsonl").unlink()
    with pytest.raises(DataError, match=r"queries.jsonl: file not found"):
        load_beir(root)


def test_missing_qrels(tiny_beir):
    root = tiny_beir()
    (root / "qrels" / "test.tsv").unlink()
    with pytest.raises(DataError, match=r"no qrels/<split>.tsv"):
        load_beir(root)


@pytest.mark.parametrize(
    "bad_line,match",
    [
        ('{"_id": "d9", "text": "broken', r"corpus.jsonl:5: malformed JSON"),
        ('["a", "list"]', r"corpus.jsonl:5: expected a JSON object"),
        ('{"title": "no id", "text": "x"}', r"corpus.jsonl:5: missing or empty \"_id\""),
        ('{"_id": "d9", "title": " ", "text": "   "}', r"corpus.jsonl:5: document 'd9' has empty text"),
        ('{"_id": "d1", "text": "again"}', r"corpus.jsonl:5: duplicate _id 'd1' \(first seen on line 1\)"),
        ('{"_id": "d9", "text": 42}', r"corpus.jsonl:5: document 'd9': \"text\"/\"title\" must be strings"),
        ('{"_id": "d9", "text": "x", "timestamp": "yesterday"}', r"corpus.jsonl:5: unparsable timestamp"),
    ],
)
def test_bad_corpus_rows(tiny_beir, bad_line, match):
    root = tiny_beir()
    with (root / "corpus.jsonl").open("a") as fh:
        fh.write(bad_line + "\n")
    with pytest.raises(DataError, match=match):
        load_beir(root)


def test_invalid_utf8_names_line(tiny_beir):
    root = tiny_beir()
    with (root / "corpus.jsonl").open("ab") as fh:
        fh.write(b'{"_id": "d9", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"corpus.jsonl:5: invalid UTF-8 byte 0xe9"):
        load_beir(root)


def test_empty_query(tiny_beir):
    root = tiny_beir(queries=[{"_id": "q1", "text": "cat"}, {"_id": "q2", "text": "  "}])
    with pytest.raises(DataError, match=r"queries.jsonl:2: query 'q2' has empty text"):
        load_beir(root)


@pytest.mark.parametrize(
    "qrels,match",
    [
        ("query-id\tcorpus-id\tscore\nq1\td1\thigh\n", r"qrels/test.tsv:2: non-numeric relevance 'high'"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t0.5\n", r"qrels/test.tsv:2: relevance '0.5' is not an integer"),
        (
            "query-id\tcorpus-id\tscore\nq7\td1\t1\n",
            r"qrels/test.tsv:2: query-id 'q7' is not in queries.jsonl",
        ),
        (
            "query-id\tcorpus-id\tscore\nq1\td7\t1\n",
            r"qrels/test.tsv:2: corpus-id 'd7' is not in corpus.jsonl",
        ),
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t2\n", r"qrels/test.tsv:3: duplicate judgement"),
        ("query-id\tcorpus-id\tscore\nq1\td1\n", r"qrels/test.tsv:2: expected 3 columns"),
        ("q1\td1\t1\n", r"test.tsv:1: expected the header line"),
        ("", r"empty qrels file"),
    ],
)
def test_bad_qrels(tiny_beir, qrels, match):
    with pytest.raises(DataError, match=match):
        load_beir(tiny_beir(qrels=qrels))


def test_empty_split(tiny_beir):
    ds = load_beir(tiny_beir(qrels="query-id\tcorpus-id\tscore\n"))
    with pytest.raises(DataError, match=r"qrels/test.tsv of dataset 'tiny' is empty"):
        ds.split_qids("test")
    with pytest.raises(DataError, match=r"has no split 'train'"):
        ds.split_qids("train")


def test_drop_mode_counts_every_bad_row(tiny_beir):
    root = tiny_beir(qrels="query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td7\t1\nq1\td2\tx\n")
    with (root / "corpus.jsonl").open("a") as fh:
        fh.write('{"_id": "d9", "text": ""}\n{"_id": "d1", "text": "dup"}\nnot json\n')
    ds = load_beir(root, on_error="drop")
    assert len(ds.corpus) == 4 and len(ds.qrels["test"]) == 1
    assert ds.quarantine.counts() == {
        "corpus.jsonl: empty text": 1,
        "corpus.jsonl: duplicate _id": 1,
        "corpus.jsonl: malformed JSON": 1,
        "qrels/test.tsv: unknown corpus id": 1,
        "qrels/test.tsv: non-numeric relevance": 1,
    }
    assert "dropped 5 bad rows" in ds.quarantine.summary()


def test_click_log_missing_column(tiny_beir):
    root = tiny_beir()
    (root / "logs").mkdir()
    pd.DataFrame({"qid": ["q1"], "docid": ["d1"], "position": [1]}).to_parquet(
        root / "logs" / "impressions.parquet"
    )
    with pytest.raises(DataError, match=r"impressions.parquet: missing column\(s\) \['clicked', 'dwell_s'"):
        _ = load_beir(root).clicks  # read and checked on first use


def test_unknown_on_error_mode(tiny_beir):
    with pytest.raises(Exception, match="data.on_error='skip'"):
        load_beir(tiny_beir(), on_error="skip")


def test_jsonl_extra_fields_kept(tiny_beir):
    root = tiny_beir()
    write_jsonl(
        root / "corpus.jsonl",
        [
            {"_id": 1, "text": "a b", "popularity": 3},
            {"_id": "d1", "text": "c"},
            {"_id": "d2", "text": "x"},
            {"_id": "d3", "text": "y"},
        ],
    )
    ds = load_beir(root, on_error="drop")
    assert ds.corpus.loc["1", "popularity"] == 3


def test_a_corpus_read_a_few_records_at_a_time_is_the_same_dataset(tiny_beir, monkeypatch):
    """JSONL records become frames `RECORDS_PER_FRAME` at a time (memory): the dataset does not depend on it,
    extra fields first seen in a later frame and bad rows included."""
    from distill.data import beir

    root = tiny_beir()
    with (root / "corpus.jsonl").open("a") as fh:
        fh.write('{"_id": "d5", "text": "late field", "popularity": 7}\n{"_id": "d1", "text": "dup"}\n')
    whole = load_beir(root, on_error="drop")
    monkeypatch.setattr(beir, "RECORDS_PER_FRAME", 2)
    framed = load_beir(root, on_error="drop")
    pd.testing.assert_frame_equal(whole.corpus, framed.corpus)
    pd.testing.assert_frame_equal(whole.queries, framed.queries)
    assert (
        framed.corpus.loc["d5", "popularity"] == 7 and framed.quarantine.counts() == whole.quarantine.counts()
    )


def test_lazy_document_texts_are_the_documents_texts(tiny_beir):
    ds = load_beir(tiny_beir())
    lazy, whole = ds.lazy_doc_texts(["title", "text"]), ds.doc_texts(ds.corpus.index, ["title", "text"])
    assert len(lazy) == len(whole) and list(lazy) == whole and lazy[1:3] == whole[1:3] and lazy[2] == whole[2]


@pytest.mark.parametrize("well_formed", [True, False])
def test_a_corpus_loaded_without_texts_reads_them_from_its_file(tiny_beir, monkeypatch, well_formed):
    """`load_beir(texts=False)`: the corpus holds no title or text; its texts, read again from corpus.jsonl a
    block at a time (Arrow's blocks, or the line reader's frames for a file with a bad line), are those of the
    corpus loaded with them, past a repeated id and a bad timestamp: in order from one pass over the file, and at
    any positions."""
    import numpy as np

    from distill.data import beir

    root = tiny_beir()
    extra = [f'{{"_id": "e{i}", "title": "T{i}", "text": "extra words {i}"}}' for i in range(9)]
    extra[2] = '{"_id": "d2", "text": "a repeated id"}'
    extra[5] = '{"_id": "e5", "text": "late", "timestamp": "not a time"}'
    if not well_formed:
        extra[7] = '{"_id": "e7", "text": '  # malformed: the whole file goes line by line
    with (root / "corpus.jsonl").open("a") as fh:
        fh.write("\n".join(extra) + "\n")
    monkeypatch.setattr(beir, "JSON_BLOCK_BYTES", 256)
    monkeypatch.setattr(beir, "RECORDS_PER_FRAME", 3)
    passes = []
    for name in ("_arrow_frames", "_line_frames"):
        real = getattr(beir, name)
        monkeypatch.setattr(beir, name, lambda *a, _real=real, _name=name: passes.append(_name) or _real(*a))
    held = load_beir(root, on_error="drop")
    bare = load_beir(root, on_error="drop", texts=False)
    assert bare.corpus_file is not None and bare.corpus_file.well_formed == well_formed
    assert "text" in held.corpus and not {"title", "text"} & set(bare.corpus.columns)
    pd.testing.assert_frame_equal(bare.corpus, held.corpus.drop(columns=["title", "text"]))
    want = held.doc_texts(held.corpus.index)
    passes.clear()
    lazy = bare.lazy_doc_texts()
    assert [t for a in range(0, len(lazy), 2) for t in lazy[a : a + 2]] == want
    assert passes == ["_arrow_frames" if well_formed else "_line_frames"]  # one pass, a block at a time
    at = np.array([9, 0, 4, 4, 1])
    assert bare.texts_at(at) == [want[i] for i in at] and lazy[3] == want[3]
    assert bare.texts_at(slice(0, 0)) == [] and bare.texts_at(at, ["text"]) == held.texts_at(at, ["text"])
    assert bare.has_field("title") and not bare.has_field("body")


def test_texts_read_again_refuse_a_corpus_file_changed_since_loading(tiny_beir):
    root = tiny_beir()
    ds, later = load_beir(root, texts=False), load_beir(root, texts=False)
    assert ds.texts_at(slice(0, 2)) == ["Cats the cat sat on the mat", "Dogs dogs chase cats in the park"]
    with (root / "corpus.jsonl").open("a") as fh:
        fh.write('{"_id": "d9", "text": "new"}\n')
    # the block read before the change is still the loaded file's
    assert ds.texts_at(slice(1, 2)) == ["Dogs dogs chase cats in the park"]
    with pytest.raises(DataError, match=r"corpus.jsonl: changed or removed since the dataset was loaded"):
        later.texts_at(slice(0, 2))


def test_dropped_texts_are_read_from_the_file_and_gone_without_one(tiny_beir):
    """`drop_texts`: a dataset loaded from a folder reads them from its corpus file when asked again; one made in
    memory has none to read them from, and says so."""
    import dataclasses

    ds = load_beir(tiny_beir())
    want = ds.doc_texts(ds.corpus.index)
    ds.drop_texts()
    assert "text" not in ds.corpus and ds.doc_texts(ds.corpus.index) == want
    loose = dataclasses.replace(load_beir(tiny_beir()), corpus_file=None)
    loose.drop_texts()
    with pytest.raises(DataError, match=r"the corpus has none of the fields \['title', 'text'\]"):
        loose.doc_texts(["d1"])


def test_whole_file_checks_report_the_lines_in_order_across_frames(tiny_beir, monkeypatch):
    """Repeated ids and the qrels' known-id and repeated-pair checks run on the whole frame (memory): each
    offending line is still named, in the file's order, with the line of the first occurrence, also when the
    first and the repeat were parsed into different frames."""
    from distill.data import beir

    qrels = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t1\nq9\td1\t1\nq1\td9\t1\nq1\td1\t0\nq2\td3\t-2\n"
    root = tiny_beir(qrels=qrels)
    with (root / "corpus.jsonl").open("a") as fh:
        fh.write('{"_id": "d5", "text": "new"}\n{"_id": "d2", "text": "again"}\n')
    monkeypatch.setattr(beir, "RECORDS_PER_FRAME", 2)
    monkeypatch.setattr(beir, "QRELS_PER_FRAME", 2)
    ds = load_beir(root, on_error="drop")
    assert [(r["file"], r["line"], r["detail"]) for r in ds.quarantine.rows] == [
        ("corpus.jsonl", 6, "duplicate _id 'd2' (first seen on line 2)"),
        ("qrels/test.tsv", 4, "query-id 'q9' is not in queries.jsonl"),
        ("qrels/test.tsv", 5, "corpus-id 'd9' is not in corpus.jsonl"),
        ("qrels/test.tsv", 6, "duplicate judgement for ('q1', 'd1') (first on line 2)"),
    ]
    assert ds.corpus.loc["d2", "text"] != "again" and "d5" in ds.corpus.index
    got = ds.qrels["test"]
    assert list(zip(got.qid, got.docid, got.relevance, strict=True)) == [
        ("q1", "d1", 2),
        ("q1", "d2", 1),
        ("q2", "d3", 0),  # a negative grade reads as 0
    ]
    with pytest.raises(DataError, match=r"qrels/test.tsv:4: query-id 'q9' is not in queries.jsonl"):
        load_beir(tiny_beir(qrels=qrels))  # raise mode: the first offending qrels line


@pytest.mark.parametrize("collide", [False, True])
def test_id_positions_equal_pandas_own_lookup(monkeypatch, collide):
    """`IdPositions` (sorted 64-bit hashes, matches confirmed on the strings) gives each id the position pandas'
    `get_indexer` gives, -1 for an absent id; with every hash shared by many ids it still does."""
    import numpy as np
    import pandas as pd

    import distill.data.beir as beir
    from distill.data.beir import IdPositions

    monkeypatch.setattr(beir, "HASH_BLOCK", 1000)  # the ids hashed over several blocks
    if collide:  # hashes by length only: most ids share theirs with others
        monkeypatch.setattr(
            pd.util,
            "hash_array",
            lambda a, categorize=True: np.array([len(str(x)) for x in a], dtype=np.uint64),
        )
    rng = np.random.default_rng(0)
    ids = pd.Index([f"d{i}" for i in rng.permutation(5000)] + ["", "ü-1", "a b"])
    asked = [*rng.choice(ids.to_numpy(), 3000), "missing", "d5000", "", "D1", "ü-1"]
    got = IdPositions(ids)(pd.Series(asked, dtype="str"))
    np.testing.assert_array_equal(got, ids.get_indexer(asked))
    assert got[asked.index("missing")] == -1 and got[asked.index("")] == ids.get_loc("")
    assert len(IdPositions(ids)([])) == 0 and (IdPositions(pd.Index([]))(["x"]) == -1).all()


def test_id_positions_hold_no_python_string_per_id():
    """The lookup of a dataset's ids keeps 16 bytes per id (sorted hashes and their order) besides the ids the
    dataset holds as Arrow strings: not a Python string object per id (about 55 bytes each, 39 MiB at 600,000
    documents). Measured by tracemalloc, which counts Python's objects and NumPy's arrays, not Arrow's buffers."""
    import gc
    import tracemalloc

    import pandas as pd

    from distill.data.beir import IdPositions

    n = 200_000
    ids = pd.Index([f"doc-{i:07d}" for i in range(n)], dtype="str")
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        positions = IdPositions(ids)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert positions(["doc-0000007", "doc-9999999"]).tolist() == [7, -1]
    assert held < 20 * n, f"{held / n:.1f} bytes per id held"


@pytest.mark.parametrize(
    "text,fast",
    [
        ("query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td3\t0\nq1\td2\t-1\n", True),
        ("\ufeffquery-id\tcorpus-id\tscore\r\nq1\td1\t2\r\nq2\td3\t1", True),  # BOM, CRLF, no last newline
        ("query-id\tcorpus-id\tscore\nq1\td1\t2\n\nq2\td3\t1\n", False),  # a blank line
        ("query-id corpus-id score\nq1 d1 2\nq2 d3 1\n", False),  # spaces
        ("query-id\tcorpus-id\tscore\nq1 \td1\t2\n", False),  # a space around an id
        ("query-id\tcorpus-id\tscore\nq1\td1\t2.0\nq2\td3\t\n", False),  # a grade written as a float; none
        ("query-id\tcorpus-id\tscore\nq1\td1\t2\tx\n", False),  # four fields
    ],
)
def test_qrels_read_at_once_equal_qrels_read_by_line(tmp_path, text, fast):
    """A well-formed qrels file is read by Arrow's CSV reader at once; any other goes line by line. Where both
    read a file they give the same judgements and line numbers."""
    from distill.data.beir import _qrels_by_line, _well_formed_qrels
    from distill.data.quarantine import Quarantine

    path = tmp_path / "test.tsv"
    path.write_bytes(text.encode())
    at_once = _well_formed_qrels(path)
    assert (at_once is not None) == fast
    by_line = _qrels_by_line(path, Quarantine("drop"))
    if at_once is not None:
        pd.testing.assert_frame_equal(at_once, by_line)


@pytest.mark.parametrize(
    "kind,lines,fast",
    [
        (
            "document",
            [
                '{"_id": "d1", "title": "T", "text": "a b", "timestamp": "2024-05-01T12:00:00Z", "n": 3}',
                '{"_id": "d2", "title": "", "text": "c", "timestamp": "2024-05-02T00:00:00Z", "n": 4}',
                '{"_id": "d1", "title": "U", "text": null, "timestamp": "not a date", "n": 5}',
            ],
            True,
        ),
        (
            "document",
            ['{"_id": "d1", "text": "a", "meta": {"k": 1}}', '{"_id": "d2", "text": "b", "meta": {"k": 2}}'],
            True,
        ),
        ("query", ['{"_id": "q1", "text": "a b", "lang": "en"}', '{"_id": "q2", "text": "c"}'], True),
        ("document", ['{"_id": "d1", "text": "a"}', "", '{"_id": "d2", "text": "b"}'], False),  # a blank line
        ("document", ['\ufeff{"_id": "d1", "text": "a"}'], False),  # a byte-order mark
        ("document", ['{"_id": 1, "text": "a"}', '{"_id": 2, "text": "b"}'], False),  # numeric ids
        ("document", ['{"_id": " d1", "text": "a"}'], False),  # an id with a space
        ("document", ['{"_id": "", "text": "a"}'], False),  # an empty id
        (
            "document",
            ['{"_id": "d1", "title": " ", "text": ""}', '{"_id": "d2", "text": "b"}'],
            False,
        ),  # empty
        ("document", ['{"_id": "d1", "text": "a"}', '{"_id": "d2", "text": 5}'], False),  # a number as text
        (
            "document",
            ['{"_id": "d1", "text": "a", "n": 1}', '{"_id": "d2", "text": "b"}'],
            False,
        ),  # n missing
        ("document", ['{"_id": "d1", "text": "a"}', '{"_id": "d2", "text": "b"'], False),  # malformed
        ("document", ['["d1", "a"]'], False),  # not an object
    ],
)
def test_jsonl_read_at_once_equals_jsonl_read_by_line(tmp_path, kind, lines, fast):
    """A well-formed corpus or queries file is read by Arrow's JSON reader at once; any other goes line by line.
    Where both read a file they give the same frame: columns, their order and types, texts, line numbers; and
    the dataset loaded either way is the same (duplicate ids and bad timestamps named on the same lines)."""
    from distill.data import beir
    from distill.data.quarantine import Quarantine

    path = tmp_path / "records.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode())
    at_once = beir._well_formed_jsonl(path, kind)
    assert (at_once is not None) == fast
    if at_once is not None:
        pd.testing.assert_frame_equal(at_once, beir._jsonl_by_line(path, kind, Quarantine("drop")))
        q_fast, q_line = Quarantine("drop"), Quarantine("drop")
        read_fast = beir._read_jsonl(path, kind, q_fast)[0]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(beir, "_well_formed_jsonl", lambda *a: None)
            read_line = beir._read_jsonl(path, kind, q_line)[0]
        pd.testing.assert_frame_equal(read_fast, read_line)
        assert q_fast.rows == q_line.rows
