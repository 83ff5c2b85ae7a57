"""Kill -9 the teacher-scoring process at chosen moments (fault injection) and resume: the result must be
exactly that of an uninterrupted run, with no pair lost or duplicated and no partial shard left."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distill.config import PROJECT_ROOT
from distill.retrieval.candidates import run as run_candidates
from distill.teacher.scoring import run as run_score
from distill.teacher.soft_labels import read_soft_labels
from tests.conftest import TINY_SAMPLE

KILLS = ["before_rename:2", "after_rename:1", "after_manifest:2", "before_rename:1", "after_rename:3"]


def _setup(tmp_path, make_cfg, model_dir):
    """A reference (uninterrupted) run, and the command and workspace of a run to crash."""
    overrides = [
        f"data.path={tmp_path / 'sample'}",
        *TINY_SAMPLE,
        "retrieval.k=15",
        f"teacher.model={model_dir}",
        "teacher.max_length=64",
        "teacher.shard_size=60",
        "teacher.batch_tokens=512",
        "teacher.dtype=fp32",
        "logger=none",
        f"paths.output_root={tmp_path / 'outputs'}",
        f"paths.data_root={tmp_path / 'data'}",
    ]
    ref_cfg = make_cfg(*overrides, "paths.workspace=" + str(tmp_path / "ref"))
    run_candidates(ref_cfg)
    run_score(ref_cfg)
    reference = read_soft_labels(tmp_path / "ref" / "soft_labels")
    crash = tmp_path / "crash"
    crash.mkdir()
    (crash / "candidates.parquet").write_bytes((tmp_path / "ref" / "candidates.parquet").read_bytes())
    cmd = [
        sys.executable,
        str(PROJECT_ROOT / "scripts" / "teacher_score.py"),
        *overrides,
        f"paths.workspace={crash}",
    ]
    return reference, crash, cmd


def _check_resumed(tmp_path, reference, crash, cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    resumed = read_soft_labels(crash / "soft_labels")
    assert not resumed.duplicated(["qid", "docid"]).any()
    assert (resumed.qid.to_numpy() == reference.qid.to_numpy()).all()
    assert (resumed.docid.to_numpy() == reference.docid.to_numpy()).all()
    np.testing.assert_allclose(resumed.score, reference.score, atol=1e-6)
    assert not list((crash / "soft_labels").glob("*.tmp"))
    parts = sorted((crash / "soft_labels").glob("part-*.parquet"))
    assert sum(len(pd.read_parquet(p)) for p in parts) == len(reference)
    assert len(parts) == len(list(Path(tmp_path / "ref" / "soft_labels").glob("part-*.parquet")))
    return proc


def test_kill_9_at_five_moments_then_resume_equals_uninterrupted(tmp_path, make_cfg, tiny_model_dir):
    reference, crash, cmd = _setup(tmp_path, make_cfg, tiny_model_dir)
    for point in KILLS:
        proc = subprocess.run(
            cmd, env={**os.environ, "DISTILL_KILL_AT": point}, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == -9, (point, proc.stderr[-2000:])
    proc = _check_resumed(tmp_path, reference, crash, cmd)
    assert "already done" in proc.stdout


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_equals_uninterrupted(tmp_path, make_cfg, tiny_model_dir):
    """Eight kills: five at a random checkpoint hit (seeded point and count) and three from outside after a
    random delay, wherever the process happens to be. Resuming then equals the uninterrupted run."""
    import time

    reference, crash, cmd = _setup(tmp_path, make_cfg, tiny_model_dir)
    timing = tmp_path / "timing"
    timing.mkdir()
    (timing / "candidates.parquet").write_bytes((crash / "candidates.parquet").read_bytes())
    t = time.perf_counter()
    subprocess.run(cmd[:-1] + [f"paths.workspace={timing}"], capture_output=True, timeout=300, check=True)
    full = time.perf_counter() - t
    rng = np.random.default_rng(7)
    points = ["before_rename", "after_rename", "after_manifest"]
    for _ in range(5):
        spec = f"{points[rng.integers(3)]}:{rng.integers(1, 3)}"
        proc = subprocess.run(
            cmd, env={**os.environ, "DISTILL_KILL_AT": spec}, capture_output=True, timeout=300
        )
        assert proc.returncode in (-9, 0), (spec, proc.stderr[-2000:])  # 0: fewer shards were left than n
    for delay in rng.uniform(0.2 * full, 0.9 * full, size=3):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait(timeout=300)
    _check_resumed(tmp_path, reference, crash, cmd)
