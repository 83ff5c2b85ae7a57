"""Kill -9 the teacher-scoring process at chosen moments (fault injection) and resume: the result must be
exactly that of an uninterrupted run, with no pair lost or duplicated and no partial shard left."""

import os
import subprocess

import numpy as np
import pytest

from tests.helpers import check_resumed, crash_setup

KILLS = ["before_rename:2", "after_rename:1", "after_manifest:2", "before_rename:1", "after_rename:3"]


def test_kill_9_at_five_moments_then_resume_equals_uninterrupted(tmp_path, make_cfg, tiny_model_dir):
    reference, crash, cmd = crash_setup(tmp_path, make_cfg, tiny_model_dir)
    for point in KILLS:
        proc = subprocess.run(
            cmd, env={**os.environ, "DISTILL_KILL_AT": point}, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == -9, (point, proc.stderr[-2000:])
    proc = check_resumed(tmp_path, reference, crash, cmd)
    assert "already done" in proc.stdout


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_equals_uninterrupted(tmp_path, make_cfg, tiny_model_dir):
    """Eight kills: five at a random checkpoint hit (seeded point and count) and three from outside after a
    random delay, wherever the process happens to be. Resuming then equals the uninterrupted run."""
    import time

    reference, crash, cmd = crash_setup(tmp_path, make_cfg, tiny_model_dir)
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
    check_resumed(tmp_path, reference, crash, cmd)
