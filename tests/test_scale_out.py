"""Scale-out on existing engines: teacher scoring under `accelerate launch` (2 CPU processes, gloo).

`accelerate launch --multi_gpu` goes through torchrun, which also starts CPU processes on a machine without a
GPU; `accelerate launch --cpu` would need mpirun."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from distill.teacher.soft_labels import read_soft_labels
from tests.test_crash_resume import _check_resumed, _setup

ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]
TWO_CPU_PROCESSES = [
    "--multi_gpu",
    "--num_processes",
    "2",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
    "--main_process_port",
]


def _launch(cmd: list[str], port: int, env: dict | None = None) -> subprocess.CompletedProcess:
    """`cmd` is [python, script, overrides...]; run the script as 2 processes under accelerate launch."""
    full = [*ACCELERATE, *TWO_CPU_PROCESSES, str(port), *cmd[1:]]
    return subprocess.run(
        full, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=600
    )


def test_two_processes_score_like_one_and_share_one_manifest(tmp_path, make_cfg, tiny_model_dir):
    reference, crash, cmd = _setup(tmp_path, make_cfg, tiny_model_dir)
    proc = _launch(cmd, 29611)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "by 2 process(es)" in proc.stdout
    out = read_soft_labels(crash / "soft_labels")
    assert (out.qid.to_numpy() == reference.qid.to_numpy()).all()
    assert (out.docid.to_numpy() == reference.docid.to_numpy()).all()
    np.testing.assert_allclose(out.score, reference.score, atol=1e-6)
    manifest = json.loads((crash / "soft_labels" / "manifest.json").read_text())
    assert set(manifest["ranks"]) == {"0", "1"}
    assert all(r["scored"] > 0 for r in manifest["ranks"].values())  # both ranks did a share
    assert manifest["summary"]["scored"] == len(reference)
    assert manifest["summary"]["processes"] == 2


def test_a_crashed_rank_loses_nothing_and_a_rerun_finishes_the_rest(tmp_path, make_cfg, tiny_model_dir):
    reference, crash, cmd = _setup(tmp_path, make_cfg, tiny_model_dir)
    # Every rank dies (SIGKILL) after recording its 2nd shard; the launcher reports the failure.
    proc = _launch(cmd, 29612, env={"DISTILL_KILL_AT": "after_manifest:2"})
    assert proc.returncode != 0
    manifest = json.loads((crash / "soft_labels" / "manifest.json").read_text())
    done = len(manifest["shards"])
    assert 2 <= done < len(list((tmp_path / "ref" / "soft_labels").glob("part-*.parquet")))
    assert not manifest["complete"]
    proc = _launch(cmd, 29613)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((crash / "soft_labels" / "manifest.json").read_text())
    assert manifest["summary"]["skipped"] > 0  # the shards finished before the crash were not redone
    # ... and a single-process re-run finds nothing left to do.
    proc = _check_resumed(tmp_path, reference, crash, cmd)
    assert f"0 scored, {len(reference)} already done" in proc.stdout


@pytest.mark.parametrize("world", [1])
def test_plain_run_is_rank_0_of_1(world):
    from distill.distributed import process_ranks

    r = process_ranks()
    assert (r.rank, r.world, r.is_main) == (0, world, True)
    assert r.device("auto") == "auto"
    r.barrier()  # a no-op without a process group
