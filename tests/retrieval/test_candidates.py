import json
import subprocess
import sys

import pandas as pd
import pytest

from distill.config import PROJECT_ROOT
from distill.errors import DataError
from distill.ir.bm25 import BM25Index
from distill.retrieval.candidates import run
from distill.retrieval.candidates import run as run_candidates
from tests.conftest import spy_loaded_corpus_columns


def test_bm25_ranks_matching_documents_and_drops_non_matching():
    ix = BM25Index(["the cat sat on the mat", "dogs are running fast", "a cat and a dog"])
    pos, scores = ix.search(["cats", "running dog", "zebra"], k=10)
    assert list(pos[0]) == [2, 0] or list(pos[0]) == [0, 2]
    assert list(pos[1]) == [1, 2]  # stemming: running/dogs
    assert len(pos[2]) == 0
    assert (scores[1][:-1] >= scores[1][1:]).all()


def test_candidates_end_to_end_on_tiny_sample(tiny_sample_cfg):
    cfg = tiny_sample_cfg("retrieval.k=20")
    metrics = run(cfg)
    df = pd.read_parquet(f"{cfg.paths.workspace}/candidates.parquet")
    assert list(df.columns) == ["qid", "docid", "rank", "bm25", "split"]
    assert set(df.split) == {"train", "test"} and df.groupby("qid").size().max() <= 20
    assert not df.duplicated(["qid", "docid"]).any()
    first = df.groupby("qid").head(1)
    assert (first["rank"] == 1).all()
    assert 0.1 < metrics["test"]["ndcg@10"] < 0.95
    saved = json.loads(
        (
            cfg.paths.workspace
            and __import__("pathlib").Path(cfg.paths.workspace) / "candidates_metrics.json"
        ).read_text()
    )
    assert saved["bm25"]["test"]["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"])


def test_query_in_two_splits_is_refused(tiny_beir, make_cfg):
    root = tiny_beir()
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")
    with pytest.raises(DataError, match=r"query 'q1' is judged in both qrels/train.tsv and qrels/test.tsv"):
        run(make_cfg("data=beir", f"data.path={root}", "data.name=tiny"))


def test_bm25_on_vaswani_is_sensible(shared_data, make_cfg):
    metrics = run(make_cfg("data=vaswani", "data.test_fraction=1.0", "retrieval.splits=[test]"))
    assert metrics["test"]["queries"] == 93
    assert 0.35 < metrics["test"]["ndcg@10"] < 0.6


def test_cli_user_error_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "scripts" / "candidates.py"),
            "data=beir",
            f"data.path={tmp_path / 'missing'}",
            "logger=none",
            f"paths.output_root={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "dataset folder not found" in proc.stderr


def test_tantivy_and_bm25s_agree_on_the_same_bm25(tiny_sample_cfg):
    """retrieval=tantivy (pruned, Rust) against bm25s at the same k1/b and tokenisation: the same quality within
    0.01 (nDCG@10, Recall@100), nearly the same candidates, and the same scores up to tantivy's one-byte length
    norms. The index is built once and reused."""
    import pandas as pd

    from distill.workspace import Workspace

    exact = run_candidates(tiny_sample_cfg("retrieval.k1=1.2", "paths.workspace=${paths.output_root}/exact"))
    pruned_cfg = tiny_sample_cfg("retrieval=tantivy", "paths.workspace=${paths.output_root}/pruned")
    pruned = run_candidates(pruned_cfg)
    for split in exact:
        for m in ("ndcg@10", "recall@100"):
            assert abs(exact[split][m] - pruned[split][m]) <= 0.01, (
                split,
                m,
                exact[split][m],
                pruned[split][m],
            )
    ws = Workspace.from_cfg(pruned_cfg)
    a = pd.read_parquet(ws.root.parent / "exact" / "candidates.parquet")
    b = pd.read_parquet(ws.candidates)
    both = a.merge(b, on=["qid", "docid"])
    assert len(both) >= 0.97 * len(a)
    ratio = both.bm25_y / both.bm25_x  # tantivy stores document lengths in one byte: scores within a few %
    assert ratio.min() >= 0.9999 and ratio.max() < 1.08 and ratio.mean() < 1.01
    marker = ws.root / "index" / "tantivy" / ".distill-index.json"
    built = marker.stat().st_mtime_ns
    run_candidates(pruned_cfg)
    assert marker.stat().st_mtime_ns == built  # reused, not rebuilt


def test_tantivy_refuses_bm25_parameters_it_cannot_apply(make_cfg):
    from distill.config import validate
    from distill.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"retrieval.engine='tantivy': tantivy scores with Lucene's BM25 at k1=1.2 b=0.75"
    ):
        validate(make_cfg("retrieval.engine=tantivy"))
    validate(make_cfg("retrieval=tantivy"))


def test_chunks_smaller_than_the_data_give_identical_candidates(tiny_sample_cfg):
    """Candidates are written a chunk of queries at a time (one row group each): the file and BM25's metrics
    do not depend on the chunk size."""
    import pyarrow.parquet as pq

    whole = tiny_sample_cfg("paths.workspace=${paths.output_root}/whole")
    small = tiny_sample_cfg("retrieval.chunk_queries=7", "paths.workspace=${paths.output_root}/small")
    m_whole, m_small = run_candidates(whole), run_candidates(small)
    a = pd.read_parquet(f"{whole.paths.workspace}/candidates.parquet")
    b = pd.read_parquet(f"{small.paths.workspace}/candidates.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert pq.ParquetFile(f"{small.paths.workspace}/candidates.parquet").num_row_groups > 5
    for split in m_whole:
        assert m_whole[split] == pytest.approx(m_small[split])


def test_bm25s_searching_on_two_processes_gives_the_candidates_of_one(tiny_sample_cfg):
    """bm25s searches chunks on forked processes (`retrieval.threads`): the file and BM25's metrics are those of
    one process searching every chunk in turn."""
    one = tiny_sample_cfg(
        "retrieval.chunk_queries=7", "retrieval.threads=1", "paths.workspace=${paths.output_root}/one"
    )
    two = tiny_sample_cfg(
        "retrieval.chunk_queries=7", "retrieval.threads=2", "paths.workspace=${paths.output_root}/two"
    )
    m_one, m_two = run_candidates(one), run_candidates(two)
    a = pd.read_parquet(f"{one.paths.workspace}/candidates.parquet")
    b = pd.read_parquet(f"{two.paths.workspace}/candidates.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert m_one == m_two


def test_the_writer_uses_the_metrics_a_chunk_brings_and_computes_the_others(tmp_path):
    """A chunk searched with its per-query metrics (as the search threads and Dask workers compute them) is not
    evaluated a second time; a chunk without them is evaluated against the qrels."""
    from distill.retrieval.candidates import CandidatesWriter, chunk_metrics

    qrels = pd.DataFrame({"qid": ["q1", "q2"], "docid": ["d1", "d2"], "relevance": [1, 1]})
    rows = pd.DataFrame(
        {"qid": ["q1", "q1", "q2"], "docid": ["d1", "d3", "d3"], "rank": [1, 2, 1], "bm25": [2.0, 1.0, 1.5]}
    ).assign(split="test")
    computed = chunk_metrics(qrels, rows, ["q1", "q2"])
    assert list(computed["ndcg@10"]) == [1.0, 0.0]
    given = computed.assign(**{"ndcg@10": [0.5, 0.9]})
    writer = CandidatesWriter(tmp_path / "candidates.parquet", {"test": qrels})
    writer.add(rows, ["q1", "q2"], "test", 2, given)
    assert writer.close()["test"]["ndcg@10"] == pytest.approx(0.7)
    writer = CandidatesWriter(tmp_path / "candidates.parquet", {"test": qrels})
    writer.add(rows, ["q1", "q2"], "test", 2)
    assert writer.close()["test"]["ndcg@10"] == 0.5


@pytest.mark.parametrize("engine", ["bm25s", "tantivy"])
def test_the_stage_lets_the_corpus_texts_go_once_the_index_has_tokenised_them(
    tiny_sample_cfg, engine, monkeypatch
):
    """Searching reads only the queries' texts, so the stage drops the corpus's (its dataset's largest part) as soon
    as the index has them: for bm25s before its postings are built. The candidates are those of an index built
    while the texts are held."""
    from distill.data.prepare import load_dataset
    from distill.ir.bm25 import ArrayBM25
    from distill.retrieval.candidates import build_index, chunk_result, queries_per_split, write_candidates
    from distill.workspace import Workspace

    cfg = tiny_sample_cfg(*(["retrieval=tantivy"] if engine == "tantivy" else []))
    ws, ds = Workspace.from_cfg(cfg), load_dataset(cfg)
    docs = len(ds.corpus)
    at_postings = []
    original = ArrayBM25.index

    def index(self, *args, **kwargs):
        at_postings.append("text" in ds.corpus)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ArrayBM25, "index", index)
    splits = queries_per_split(ds, ["train", "test"])
    write_candidates(ws, ds, splits, cfg)
    assert at_postings == ([False] if engine == "bm25s" else [])
    assert "text" not in ds.corpus and "title" not in ds.corpus
    assert len(ds.corpus) == docs and "timestamp" in ds.corpus
    got = pd.read_parquet(ws.candidates)
    held = load_dataset(cfg)
    rows, _ = chunk_result(
        held, build_index(held, cfg.retrieval, ws), ("test", splits["test"]), cfg.retrieval.k
    )
    assert "text" in held.corpus
    want = got[got.split == "test"].reset_index(drop=True)
    pd.testing.assert_frame_equal(want[rows.columns], rows.reset_index(drop=True), check_dtype=False)


@pytest.mark.parametrize("engine", ["bm25s", "tantivy"])
def test_the_stage_reads_the_corpus_texts_from_its_file_and_never_holds_them(
    tiny_sample_cfg, engine, monkeypatch, tmp_path
):
    """The stage loads the dataset without the corpus's texts (`load_dataset(texts=False)`): the index reads
    them from corpus.jsonl as it tokenises them. Its candidates are those of an index over a dataset that holds
    them."""
    from distill.data.prepare import load_dataset
    from distill.retrieval import candidates as stage
    from distill.workspace import Workspace

    cfg = tiny_sample_cfg(*(["retrieval=tantivy"] if engine == "tantivy" else []))
    loaded = spy_loaded_corpus_columns(monkeypatch, stage)
    run_candidates(cfg)
    assert len(loaded) == 1 and not {"title", "text"} & loaded[0]
    got = pd.read_parquet(Workspace.from_cfg(cfg).candidates)
    held = load_dataset(cfg)
    assert {"title", "text"} <= set(held.corpus.columns)
    index = stage.build_index(held, cfg.retrieval, Workspace(tmp_path / "held"))
    for split in ("train", "test"):
        qids = list(got[got.split == split].qid.unique())
        rows, _ = stage.chunk_result(held, index, (split, qids), cfg.retrieval.k)
        want = got[got.split == split].reset_index(drop=True)
        pd.testing.assert_frame_equal(want[rows.columns], rows.reset_index(drop=True), check_dtype=False)
