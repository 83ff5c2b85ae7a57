"""Tracking backends chosen by `_target_`: a shrunk stage's run read back through each backend's own reader, the
dashboard answering on a real loopback socket, and `logger=none` writing nothing anywhere."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from distill.errors import ConfigError
from distill.retrieval.candidates import run as run_candidates
from distill.tracking import report_to, start_run, trackers


def stage_with(tiny_sample_cfg, tmp_path, logger: str):
    cfg = tiny_sample_cfg(f"logger={logger}", "retrieval.k=10")
    run_candidates(cfg)
    return cfg, Path(cfg.paths.workspace)


def test_tensorboard_run_read_back_with_tensorboards_reader(tiny_sample_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    cfg, ws = stage_with(tiny_sample_cfg, tmp_path, "tensorboard")
    metrics = json.loads((ws / "candidates_metrics.json").read_text())
    runs = sorted((ws / "tensorboard" / "candidates").iterdir())
    assert len(runs) == 1
    mux = EventMultiplexer().AddRunsFromDirectory(str(runs[0]))
    mux.Reload()
    scalars = {
        tag: mux.Scalars(run, tag)[-1].value for run, tags in mux.Runs().items() for tag in tags["scalars"]
    }
    key = next(k for k in scalars if k.endswith("ndcg@10"))
    split = key.split("/")[0]
    assert scalars[key] == pytest.approx(metrics["bm25"][split]["ndcg@10"], rel=1e-6)
    assert report_to(cfg) == ["tensorboard"]


def test_mlflow_run_read_back_with_mlflows_client(tiny_sample_cfg, tmp_path):
    import mlflow

    cfg, ws = stage_with(tiny_sample_cfg, tmp_path, "mlflow")
    client = mlflow.MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name(str(cfg.data.name))
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "candidates"
    assert run.data.params["retrieval.k"] == "10" and run.data.params["data.name"] == str(cfg.data.name)
    metrics = json.loads((ws / "candidates_metrics.json").read_text())
    key = next(k for k in run.data.metrics if k.endswith("ndcg_at_10"))
    split = key.split("/")[0]
    assert run.data.metrics[key] == pytest.approx(metrics["bm25"][split]["ndcg@10"], rel=1e-6)
    assert report_to(cfg) == ["mlflow"]


def test_several_backends_at_once_and_errors(tiny_sample_cfg, tmp_path):
    cfg = tiny_sample_cfg("logger=[tensorboard,mlflow]")
    assert [type(t).__name__ for t in trackers(cfg)] == ["TensorBoardTracker", "MlflowTracker"]
    with start_run(cfg, "probe") as run:
        run.summary({"test/x@1": 1.0})
    ws = Path(cfg.paths.workspace)
    assert (ws / "mlflow.db").is_file() and any((ws / "tensorboard" / "probe").iterdir())
    bad = tiny_sample_cfg("logger=none", "+logger.x._target_=distill.nowhere.Tracker")
    with pytest.raises(ConfigError, match=r"logger.x._target_: cannot import 'distill.nowhere.Tracker'"):
        trackers(bad)
    bad = tiny_sample_cfg(
        "logger=none",
        "+logger.wandb._target_=distill.tracking.wandb_tracker.WandbTracker",
        "+logger.wandb.mode=disabled",
    )
    with pytest.raises(ConfigError, match="logger.wandb.mode='disabled': use offline or online"):
        trackers(bad)


def test_logger_none_writes_nothing(tiny_sample_cfg, tmp_path):
    cfg, ws = stage_with(tiny_sample_cfg, tmp_path, "none")
    assert report_to(cfg) == []
    for name in ("wandb", "tensorboard", "mlflow.db", "mlartifacts", "mlruns"):
        assert not (ws / name).exists()
    assert not (Path.cwd() / "mlruns").exists()


def test_dashboard_answers_on_loopback_with_the_runs(tiny_sample_cfg, tmp_path):
    from distill.dashboard import serve, wait_until_up

    _, ws = stage_with(tiny_sample_cfg, tmp_path, "tensorboard")
    proc, name, url = serve("auto", ws)
    try:
        assert name == "tensorboard" and url.startswith("http://127.0.0.1:")
        assert wait_until_up(url, proc, seconds=90)
        with urllib.request.urlopen(url + "data/runs", timeout=10) as r:
            runs = json.loads(r.read())
        assert any(r.startswith("candidates/") for r in runs)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.poll() is not None


def test_dashboard_refuses_a_workspace_without_runs_and_a_public_host(tmp_path):
    from distill.dashboard import serve
    from distill.errors import StageNotReadyError

    with pytest.raises(StageNotReadyError, match="no tracked runs to show"):
        serve("auto", tmp_path)
    with pytest.raises(ConfigError, match="dashboard.host='0.0.0.0': the dashboard only listens on loopback"):
        serve("auto", tmp_path, host="0.0.0.0")


def test_dashboard_on_a_taken_port_and_a_missing_workspace_are_one_line(tiny_sample_cfg, tmp_path):
    """Another program on the port is refused before anything starts (it once answered the readiness check and
    the dashboard printed its URL); a workspace that does not exist is named, not created."""
    import socket

    from distill.dashboard import run as run_dashboard
    from distill.dashboard import serve
    from distill.errors import StageNotReadyError

    _, ws = stage_with(tiny_sample_cfg, tmp_path, "tensorboard")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            ConfigError, match=f"dashboard.port={port}: another program listens on 127.0.0.1:{port}"
        ):
            serve("auto", ws, port=port)
    missing = tmp_path / "no" / "such" / "workspace"
    with pytest.raises(StageNotReadyError, match="does not exist: run a stage there first"):
        run_dashboard(tiny_sample_cfg(f"paths.workspace={missing}"))
    assert not missing.exists() and not missing.parent.exists()


def test_a_misspelt_backend_is_refused_before_anything_starts(tiny_sample_cfg):
    from distill.config import validate

    with pytest.raises(ConfigError, match=r"dashboard.backend='tensorbord': use auto, tensorboard or mlflow"):
        validate(tiny_sample_cfg("dashboard.backend=tensorbord"))


def test_trainer_loss_curves_reach_tensorboard(tiny_sample_cfg):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    from distill.students.stage import run as run_student
    from tests.helpers import TINY_TEACHER, scored_by_tiny_teacher

    scored_by_tiny_teacher(tiny_sample_cfg)
    cfg = tiny_sample_cfg(
        *TINY_TEACHER,
        "logger=tensorboard",
        "student=bi_encoder",
        "student.negatives=3",
        "student.negative_margin=null",
        "student.samples_per_positive=2",
        "student.embedding_dim=16",
        "student.batch_size=16",
    )
    run_student(cfg)
    mux = EventMultiplexer().AddRunsFromDirectory(str(Path(cfg.paths.workspace) / "tensorboard"))
    mux.Reload()
    tags = {run: set(t["scalars"]) for run, t in mux.Runs().items()}
    trainer = [t for run, t in tags.items() if run.startswith("trainer")]
    assert trainer and any("loss" in tag for tag in trainer[0])
    stage = [t for run, t in tags.items() if run.startswith("train-student-bi_encoder-kl")]
    assert stage and "test/rerank/ndcg@10" in stage[0]


def test_tensorboard_runs_of_a_sweep_each_write_an_hparams_row(tmp_path):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import plugin_data_pb2

    from distill.tracking.tensorboard_tracker import TensorBoardRun

    for k1, ndcg in ((0.9, 0.44), (1.2, 0.45)):
        run = TensorBoardRun(tmp_path / f"k1={k1}", {"stage": "candidates", "retrieval.k1": k1})
        run.log({"test/bm25/ndcg@10": ndcg})
        run.close()
    mux = EventMultiplexer().AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    rows = {}
    for run_name, tags in mux.PluginRunToTagToContent("hparams").items():
        for content in tags.values():
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if data.HasField("session_start_info"):
                rows[run_name] = data.session_start_info.hparams["retrieval.k1"].number_value
    assert sorted(rows.values()) == [0.9, 1.2]
