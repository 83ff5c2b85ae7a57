"""Candidates from another engine's run file (distill/retrieval/importers.py): the same file `make candidates`
writes when the run holds the same ranking, and every bad line named."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from distill.config import PROJECT_ROOT
from distill.data.prepare import load_dataset
from distill.errors import DataError
from distill.retrieval.candidates import queries_per_split
from distill.retrieval.candidates import run as run_candidates
from distill.retrieval.importers import import_run, main
from distill.workspace import Workspace


def as_run(cands: pd.DataFrame) -> str:
    return "".join(
        f"{q} Q0 {d} {r} {s:.6f} bm25\n"
        for q, d, r, s in zip(cands.qid, cands.docid, cands["rank"], cands.bm25)
    )


def test_a_run_of_the_same_ranking_gives_the_same_candidates(tiny_sample_cfg, tmp_path):
    cfg = tiny_sample_cfg()
    metrics = run_candidates(cfg)
    ours = pd.read_parquet(Workspace.from_cfg(cfg).candidates)
    run_file = tmp_path / "engine.run"
    run_file.write_text(as_run(ours))
    other = tiny_sample_cfg("paths.workspace=${paths.output_root}/imported", "retrieval.chunk_queries=5")
    ws, ds = Workspace.from_cfg(other), load_dataset(other)
    out = import_run(run_file, ws, ds, queries_per_split(ds, ["train", "test"]), 5)
    got = pd.read_parquet(ws.candidates)
    pd.testing.assert_frame_equal(
        got[["qid", "docid", "rank", "split"]], ours[["qid", "docid", "rank", "split"]]
    )
    pd.testing.assert_series_equal(got.bm25, ours.bm25, atol=1e-5, check_dtype=False)
    for split in metrics:
        assert out["metrics"][split]["ndcg@10"] == pytest.approx(metrics[split]["ndcg@10"])


@pytest.mark.parametrize(
    "lines,error",
    [
        (["q0 Q0 d1 1 0.5 t", "q0 Q0 d2 2 high t"], r"engine.run:2: score 'high' is not a finite number"),
        (["q0 Q0 d1 1 0.5"], r"engine.run:1: 5 fields; a TREC run line has 6"),
        (["q0 Q0 d1 1 0.5 t", "q0 Q0 d1 2 0.4 t"], r"engine.run:2: pair \('q0', 'd1'\) is given twice"),
        (
            ["q0 Q0 d1 1 0.5 t", "q1 Q0 d1 1 0.5 t", "q0 Q0 d2 2 0.4 t"],
            r"engine.run:3: query 'q0' comes back",
        ),
        (
            ["q0 Q0 d1 1 0.5 t", "q0 Q0 nosuchdoc 2 0.4 t"],
            r"engine.run:2: docid 'nosuchdoc' is not in the corpus",
        ),
        (["nosuchq Q0 d1 1 0.5 t"], r"engine.run:1: qid 'nosuchq' is not a query of dataset"),
    ],
)
def test_bad_lines_are_named(tiny_sample_cfg, tmp_path, lines, error):
    cfg = tiny_sample_cfg()
    ws, ds = Workspace.from_cfg(cfg), load_dataset(cfg)
    run_file = tmp_path / "engine.run"
    run_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=error):
        import_run(run_file, ws, ds, queries_per_split(ds, ["train", "test"]), 100)
    assert not ws.candidates.exists()


def test_the_command_writes_candidates_or_says_one_line(tiny_sample_cfg, tmp_path, capsys):
    cfg = tiny_sample_cfg()
    run_candidates(cfg)
    run_file = tmp_path / "engine.run"
    run_file.write_text(as_run(pd.read_parquet(Workspace.from_cfg(cfg).candidates)))
    target = tmp_path / "ws2"
    overrides = ["--dataset", str(cfg.data.path)]
    assert main(["trec-run", str(run_file), str(target), *overrides]) == 0
    assert (target / "candidates.parquet").is_file() and (target / "candidates.record.json").is_file()
    run_file.write_text("q0 Q0 d1 1 x t\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "distill.retrieval.importers",
            "trec-run",
            str(run_file),
            str(tmp_path / "ws3"),
            *overrides,
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: {run_file}:1: score 'x' is not a finite number (fifth field)"
    ]
