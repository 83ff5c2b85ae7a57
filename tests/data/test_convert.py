import json

import pytest

from distill.data.beir import load_beir
from distill.data.convert import convert, parse_smart, parse_trec_docs, parse_trec_topics, split_qrels
from distill.errors import ConfigError, DataError

TREC_DOCS = """<DOC>
<DOCNO> 7 </DOCNO>
<TITLE>Radio waves</TITLE>
<TEXT>propagation of  radio waves</TEXT>
</DOC>
<DOC>
<DOCNO>8</DOCNO>
plain body text
</DOC>
"""


def test_trec_parsers():
    docs = parse_trec_docs(TREC_DOCS)
    assert docs == [
        {"_id": "7", "title": "Radio waves", "text": "propagation of radio waves"},
        {"_id": "8", "title": "", "text": "plain body text"},
    ]
    topics = parse_trec_topics(
        "<top>\n<num> Number: 051\n<title> WAVE GUIDES\n<desc> Description:\nabout guides\n</top>",
        "title+desc",
    )
    assert topics == [{"_id": "51", "text": "WAVE GUIDES about guides"}]
    with pytest.raises(DataError, match="no <DOC>"):
        parse_trec_docs("nothing here", "x.trec")


def test_trec_convert(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "docs.trec").write_text(TREC_DOCS)
    (src / "topics.trec").write_text(
        "<top>\n<num>1</num><title>\nRADIO WAVES\n</title>\n</top>\n"
        "<top>\n<num>2</num><title>\nbody\n</title>\n</top>\n"
    )
    (src / "qrels").write_text("1 0 7 1\n2 0 8 1\n")
    counts = convert("trec", src, tmp_path / "out", {}, test_fraction=0.5, split_seed=0)
    assert counts["docs"] == 2 and counts["queries"] == 2
    ds = load_beir(tmp_path / "out")
    assert ds.queries.loc["1", "text"] == "radio waves"  # all-caps topics are lower-cased
    assert sum(len(q) for q in ds.qrels.values()) == 2


SMART = (
    ".I 1\r\n.T\r\nFirst title\r\n.W\r\nsome words\r\n.B\r\nCACM December, 1958\r\n.X\r\n1\t6\t1\r\n"
    "1\t6\t1\r\n2\t5\t1\r\n.I 2\r\n.T\r\nno date\r\n.I 28\r\n56\r\n.T\r\nwrapped id\r\n.W\r\nbody"
)


def test_smart_parser_wrapped_ids_and_crlf():
    recs = parse_smart(SMART.replace("\r\n", "\n"))
    assert [r["I"] for r in recs] == ["1", "2", "2856"]
    assert recs[0]["T"] == "First title" and recs[2]["W"] == "body"


def test_smart_convert_dates_citations_and_qrels(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "docs").write_bytes(SMART.encode())
    (src / "q").write_text(".I 1\n.W\nfirst query\n.I 4\n.W\nsecond query\n")
    (src / "qrels").write_text("01 1  0 0\n04 2856 0 0\n")
    convert(
        "smart",
        src,
        tmp_path / "out",
        {"docs": "docs", "queries": "q", "qrels": "qrels", "qrels_format": "cacm"},
        test_fraction=1.0,
    )
    ds = load_beir(tmp_path / "out")
    assert str(ds.corpus.loc["1", "timestamp"].date()) == "1958-12-01"
    assert ds.corpus.loc["1", "popularity"] == 2 and ds.corpus.loc["2856", "title"] == "wrapped id"
    assert sorted(ds.qrels["test"].qid) == ["1", "4"]


def test_cranfield_codes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "d").write_text(".I 1\n.T\nt\n.W\nw\n.I 2\n.W\nx\n.I 3\n.W\ny\n")
    (src / "q").write_text(".I 001\n.W\nfirst\n.I 004\n.W\nsecond\n")
    (src / "r").write_text("1 1 1\n1 2 4\n2 3 -1\n")
    convert(
        "smart",
        src,
        tmp_path / "out",
        {
            "docs": "d",
            "queries": "q",
            "qrels": "r",
            "qrels_format": "cranfield",
            "sequential_query_ids": True,
        },
        test_fraction=1.0,
    )
    q = load_beir(tmp_path / "out").qrels["test"]
    assert q.values.tolist() == [["1", "1", 4], ["1", "2", 1], ["2", "3", 0]]


def test_flagembedding_convert(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rows = [
        {
            "query": "what is x",
            "pos": ["x is a letter"],
            "neg": ["y is too", "z"],
            "pos_scores": [3.0],
            "neg_scores": [1.0, 0.5],
        }
    ]
    (src / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    counts = convert("flagembedding", src, tmp_path / "out", {"file": "t.jsonl"}, test_fraction=1.0)
    assert counts == {"docs": 3, "queries": 1, "qrels/test": 1}
    (src / "t.jsonl").write_text('{"query": "q", "pos": ["a"]}\n')
    with pytest.raises(DataError, match=r"t.jsonl:1: missing key 'neg'"):
        convert("flagembedding", src, tmp_path / "out2", {"file": "t.jsonl"})


def test_msmarco_convert(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "collection.tsv").write_text("0\tfirst passage\n1\tsecond passage\n")
    (src / "queries.dev.tsv").write_text("10\twhat is first\n")
    (src / "qrels.dev.tsv").write_text("10 0 0 1\n")
    convert(
        "msmarco",
        src,
        tmp_path / "out",
        {"queries": {"test": "queries.dev.tsv"}, "qrels": {"test": "qrels.dev.tsv"}},
    )
    ds = load_beir(tmp_path / "out")
    assert ds.qrels["test"].values.tolist() == [["10", "0", 1]]


def test_hf_convert_with_local_json(tmp_path):
    """The same code path as a hub id (datasets.load_dataset), fed from local JSON files."""
    for name, rows in {
        "corpus": [{"_id": "a", "title": "", "text": "alpha"}, {"_id": "b", "title": "B", "text": "beta"}],
        "queries": [{"_id": "q", "text": "alpha?"}],
        "qrels": [{"query-id": "q", "corpus-id": "a", "score": 1}],
    }.items():
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    spec = lambda n: {"path": "json", "data_files": str(tmp_path / f"{n}.jsonl"), "split": "train"}  # noqa: E731
    convert(
        "hf",
        tmp_path,
        tmp_path / "out",
        {"corpus": spec("corpus"), "queries": spec("queries"), "qrels": {"test": spec("qrels")}},
    )
    ds = load_beir(tmp_path / "out")
    assert len(ds.corpus) == 2 and ds.qrels["test"].values.tolist() == [["q", "a", 1]]


def test_unknown_format_and_option(tmp_path):
    with pytest.raises(ConfigError, match="has no converter"):
        convert("xml", tmp_path, tmp_path / "o")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['doks'\]"):
        convert("trec", tmp_path, tmp_path / "o", {"doks": "x"})


def test_split_is_deterministic_and_query_level():
    qrels = [(f"q{i}", f"d{j}", 1) for i in range(200) for j in range(3)]
    a, b = split_qrels(qrels, 0.3, 0), split_qrels(list(reversed(qrels)), 0.3, 0)
    assert {q for q, _, _ in a["test"]} == {q for q, _, _ in b["test"]}
    assert not {q for q, _, _ in a["test"]} & {q for q, _, _ in a["train"]}
    assert 40 < len({q for q, _, _ in a["test"]}) < 80


# ----------------------------------------------------------------------------- the real collections


def _load(make_cfg, name):
    from distill.data.prepare import load_dataset

    return load_dataset(make_cfg(f"data={name}"))


def test_vaswani(shared_data, make_cfg):
    ds = _load(make_cfg, "vaswani")
    assert len(ds.corpus) == 11429 and len(ds.queries) == 93
    assert sum(len(q) for q in ds.qrels.values()) == 2083


def test_cranfield_drops_the_two_empty_documents(shared_data, make_cfg):
    ds = _load(make_cfg, "cranfield")
    assert len(ds.corpus) == 1398 and len(ds.queries) == 225
    assert ds.quarantine.counts()["corpus.jsonl: empty text"] == 2
    grades = sorted(set().union(*(set(q.relevance) for q in ds.qrels.values())))
    assert grades == [0, 1, 2, 3, 4]


def test_cacm_dates_and_citations(shared_data, make_cfg):
    ds = _load(make_cfg, "cacm")
    assert len(ds.corpus) == 3204 and len(ds.queries) == 64
    assert sum(len(q) for q in ds.qrels.values()) == 796
    assert "2856" in ds.corpus.index  # the wrapped ".I 28 / 56" record
    assert ds.corpus["timestamp"].notna().mean() > 0.99
    assert ds.corpus["timestamp"].min().year == 1958 and ds.corpus["timestamp"].max().year == 1979
    assert ds.corpus.loc["1", "popularity"] == 10 and ds.corpus["popularity"].max() > 10


def test_flagembedding_sample(shared_data, make_cfg):
    ds = _load(make_cfg, "flagembedding")
    assert len(ds.queries) == 10 and len(ds.corpus) <= 260
    assert sum(len(q) for q in ds.qrels.values()) == 10
