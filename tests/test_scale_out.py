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
from tests.helpers import check_resumed, crash_setup

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
    reference, crash, cmd = crash_setup(tmp_path, make_cfg, tiny_model_dir)
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
    reference, crash, cmd = crash_setup(tmp_path, make_cfg, tiny_model_dir)
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
    proc = check_resumed(tmp_path, reference, crash, cmd)
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
    from tests.helpers import TINY_TEACHER, scored_by_tiny_teacher

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
    from distill.teacher.model import load_teacher
    from tests.conftest import TINY_SAMPLE
    from tests.helpers import TINY_TEACHER

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
    teacher = load_teacher(str(out), max_length=48, device="cpu")  # a normal Hugging Face folder
    assert teacher.model.config.num_labels == 1


def test_partitions_never_split_a_query():
    from distill.students.gbdt_dask import partitions

    sizes = np.array([5, 1, 7, 3, 3, 9, 2])
    rows, groups = partitions(sizes, 3)
    assert sum(groups) == len(sizes) and sum(rows) == sizes.sum()
    ends = np.cumsum(groups)
    assert list(rows) == [int(sizes[a:b].sum()) for a, b in zip([0, *ends[:-1]], ends)]
    assert len(rows) == 3 and max(rows) <= 13  # about 10 rows each, cut at group boundaries
    assert partitions(np.array([4]), 2) == ((4,), (1,))  # one query: one partition


def test_ndcg_at_hand_example():
    from distill.objectives.groups import Groups
    from distill.students.gbdt_dask import ndcg_at

    # query 1: grades [2, 0, 1], ranked by preds as d0, d2, d1: ideal order too -> 1.0
    # query 2: grades [0, 1], ranked d0 first: dcg = 1/log2(3), idcg = 1
    groups = Groups.from_sizes(np.array([3, 2]))
    preds = np.array([0.9, 0.1, 0.5, 0.8, 0.2])
    grades = np.array([2, 0, 1, 0, 1])
    assert ndcg_at(preds, grades, groups) == pytest.approx((1.0 + 1 / np.log2(3)) / 2)


def _fidelity(cfg, student, column=None):
    """nDCG@10 of the saved student (or of a feature `column`'s order) on the test queries, against teacher
    grades: its fidelity to the teacher."""
    import lightgbm as lgb
    import pandas as pd
    import xgboost as xgb

    from distill.objectives.adapters import teacher_grades
    from distill.objectives.groups import Groups
    from distill.students.gbdt_dask import ndcg_at
    from distill.teacher.soft_labels import read_soft_labels

    ws = Path(cfg.paths.workspace)
    names = json.loads((ws / "models" / student / "features.json").read_text())
    feats = pd.read_parquet(ws / "features.parquet")
    test = feats[feats.split == "test"].merge(read_soft_labels(ws / "soft_labels"), on=["qid", "docid"])
    test = test.sort_values("qid", kind="stable")
    X = test[names].to_numpy(np.float32)
    if column is not None:
        pred = test[column].to_numpy(float)
    elif student == "lightgbm":
        pred = lgb.Booster(model_file=str(ws / "models" / student / "model.txt")).predict(X)
    else:
        booster = xgb.Booster()
        booster.load_model(str(ws / "models" / student / "model.json"))
        pred = booster.predict(xgb.DMatrix(X))
    groups = Groups.from_sizes(test.groupby("qid", sort=False).size().to_numpy())
    return ndcg_at(pred, teacher_grades(test.score.to_numpy(float), groups), groups)


@pytest.mark.parametrize(
    "student,objective", [("lightgbm", "listnet_kd"), ("xgboost", "ranknet_kd"), ("lightgbm", "lambdarank")]
)
def test_gbdt_on_a_dask_local_cluster_matches_one_machine(
    tiny_sample_cfg, tiny_model_dir, student, objective
):
    from distill.features.build import run as run_features
    from distill.retrieval.candidates import run as run_candidates
    from distill.students.gbdt import train_gbdt
    from distill.teacher.scoring import run as run_score

    def cfg(*o):
        # Distributed training is not bit-identical (which worker gets which partition changes the bins and
        # sketches), so the world is a little larger than the tiny one and early stopping is off.
        return tiny_sample_cfg(
            "data.options.n_train=150",
            "data.options.n_test=50",
            "retrieval.k=15",
            f"teacher.model={tiny_model_dir}",
            "teacher.max_length=64",
            f"student={student}",
            f"student.objective={objective}",
            "student.num_trees=30",
            "student.early_stopping=30",
            *(["student.min_data_in_leaf=10"] if student == "lightgbm" else []),
            *o,
        )

    run_candidates(cfg())
    run_score(cfg())
    run_features(cfg())
    single = train_gbdt(cfg())
    one_machine = _fidelity(cfg(), student)
    dist = train_gbdt(cfg("student.dask.cluster=local", "student.dask.workers=2"))
    on_dask = _fidelity(cfg(), student)
    bm25 = _fidelity(cfg(), student, column="bm25")
    assert dist["dask"] == "local" and single["dask"] is None and dist["trees"] >= 1
    # What docs/scaling.md states: the Dask model is within 0.05 nDCG@10 (fidelity to the teacher) of one
    # machine's (measured over repeated runs: LightGBM on Dask 0.719-0.749 against 0.741-0.752 on one machine;
    # distributed training is not bit-identical). Rows cut across queries or misaligned labels would fall to
    # BM25's level, which is more than 0.05 below.
    assert one_machine > bm25 + 0.05, (one_machine, bm25)
    assert abs(on_dask - one_machine) <= 0.05, (on_dask, one_machine, bm25)


@pytest.mark.parametrize(
    "env",
    [
        {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"},  # torchrun, accelerate launch --multi_gpu
        {
            "OMPI_COMM_WORLD_RANK": "2",
            "OMPI_COMM_WORLD_SIZE": "3",
            "OMPI_COMM_WORLD_LOCAL_RANK": "0",
        },  # Open MPI
        {"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1"},  # MPICH / Intel MPI
        {"MV2_COMM_WORLD_RANK": "1", "MV2_COMM_WORLD_SIZE": "2", "MV2_COMM_WORLD_LOCAL_RANK": "1"},  # MVAPICH
        {},
    ],
)
def test_ranks_agree_with_accelerate(monkeypatch, env):
    from accelerate.utils import get_cpu_distributed_information

    from distill.distributed import LAUNCHER_VARS, process_ranks

    for names in LAUNCHER_VARS:
        for name in names:
            monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    process_ranks.cache_clear()
    try:
        ours, ref = process_ranks(), get_cpu_distributed_information()
    finally:
        process_ranks.cache_clear()
    assert (ours.rank, ours.world, ours.local_rank) == (ref.rank, ref.world_size, ref.local_rank)


@pytest.mark.parametrize("engine", ["bm25s", "tantivy"])
def test_candidates_and_features_on_a_dask_local_cluster_equal_one_process(tiny_sample_cfg, engine):
    """retrieval.dask and features.dask: queries partitioned over a 2-worker LocalCluster, results written in
    order; the files equal those of one process exactly."""
    import pandas as pd

    from distill.features.build import run as run_features
    from distill.retrieval.candidates import run as run_candidates

    engine_opts = ["retrieval=tantivy"] if engine == "tantivy" else []
    one = tiny_sample_cfg(
        *engine_opts,
        "retrieval.chunk_queries=9",
        "features.chunk_rows=300",
        "paths.workspace=${paths.output_root}/one",
    )
    many = tiny_sample_cfg(
        *engine_opts,
        "retrieval.chunk_queries=9",
        "features.chunk_rows=300",
        "retrieval.dask.cluster=local",
        "features.dask.cluster=local",
        "paths.workspace=${paths.output_root}/many",
    )
    for cfg in (one, many):
        run_candidates(cfg)
        run_features(cfg)
    for name in ("candidates.parquet", "features.parquet"):
        a = pd.read_parquet(f"{one.paths.workspace}/{name}")
        b = pd.read_parquet(f"{many.paths.workspace}/{name}")
        pd.testing.assert_frame_equal(a, b)
