"""Scale-out on existing engines: teacher scoring under `accelerate launch` (2 CPU processes, gloo).

`accelerate launch --multi_gpu` goes through torchrun, which also starts CPU processes on a machine without a
GPU; `accelerate launch --cpu` would need mpirun."""

import json
import os
import subprocess
import sys
from pathlib import Path

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


def test_bi_encoder_trains_with_ddp_over_two_processes(tmp_path, tiny_sample_cfg):
    from sentence_transformers import SentenceTransformer

    from distill.config import PROJECT_ROOT
    from distill.students.stage import run as run_student
    from tests.conftest import TINY_SAMPLE
    from tests.test_bi_encoder import TINY_TEACHER, scored_by_tiny_teacher

    scored_by_tiny_teacher(tiny_sample_cfg)
    overrides = [
        f"data.path={tmp_path / 'sample'}",
        *TINY_SAMPLE,
        *TINY_TEACHER,
        "logger=none",
        f"paths.output_root={tmp_path / 'outputs'}",
        f"paths.data_root={tmp_path / 'data'}",
        "student=bi_encoder",
        "student.negatives=3",
        "student.negative_margin=null",
        "student.samples_per_positive=3",
        "student.embedding_dim=32",
        "student.batch_size=8",
        "student.epochs=2",
    ]
    proc = _launch([sys.executable, str(PROJECT_ROOT / "scripts" / "train_student.py"), *overrides], 29614)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = tiny_sample_cfg(*overrides[len(TINY_SAMPLE) + 1 :])
    out = Path(cfg.paths.workspace) / "models" / "bi_encoder" / "kl"
    info = json.loads((out / "distill_train.json").read_text())
    assert info["processes"] == 2
    assert info["probe_loss_after"] < info["probe_loss_before"]
    emb = SentenceTransformer(str(out), device="cpu").encode(["a query", "a document"])
    assert np.isfinite(emb).all()
    # Each DDP step takes a batch per process, so one process needs twice the steps for the same epochs.
    single = run_student(cfg)
    assert abs(single["steps"] - 2 * info["steps"]) <= 2, (single["steps"], info["steps"])


def test_teacher_trains_with_ddp_over_two_processes(tmp_path, tiny_sample_cfg):
    from distill.config import PROJECT_ROOT
    from distill.retrieval.candidates import run as run_candidates
    from distill.teacher.model import load_cross_encoder
    from tests.conftest import TINY_SAMPLE
    from tests.test_bi_encoder import TINY_TEACHER

    overrides = [*TINY_TEACHER, "teacher.train.epochs=2"]
    cfg = tiny_sample_cfg(*overrides)
    run_candidates(cfg)
    paths = [
        f"data.path={tmp_path / 'sample'}",
        *TINY_SAMPLE,
        "logger=none",
        f"paths.output_root={tmp_path / 'outputs'}",
        f"paths.data_root={tmp_path / 'data'}",
    ]
    proc = _launch(
        [sys.executable, str(PROJECT_ROOT / "scripts" / "train_teacher.py"), *paths, *overrides], 29615
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = Path(cfg.paths.workspace) / "models" / "teacher"
    info = json.loads((out / "distill_train.json").read_text())
    assert info["processes"] == 2 and info["steps"] > 0
    teacher = load_cross_encoder(str(out), max_length=48, device="cpu")  # a normal Hugging Face folder
    assert teacher.model.config.num_labels == 1
