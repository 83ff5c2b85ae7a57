import json
import subprocess
import sys

import pandas as pd
import pytest

from distill.config import PROJECT_ROOT
from distill.errors import DataError
from distill.ir.bm25 import BM25Index
from distill.retrieval.candidates import run


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
