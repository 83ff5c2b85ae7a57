"""Reliability round two (one test per failure seen): no config value deletes user data, no stage trusts stale
inputs, outputs are written whole, numeric options have ranges, user errors are one line, bad click rows are
quarantined, BOMs are accepted, and a BEIR folder judged on test only works with the defaults."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distill.config import PROJECT_ROOT
from distill.data.beir import load_beir
from distill.data.prepare import dataset_dir, load_dataset
from distill.errors import ConfigError, DataError, DistillError, StageNotReadyError
from distill.retrieval.candidates import run as run_candidates
from distill.students.gbdt import load_features
from distill.students.gbdt import run as run_gbdt
from distill.teacher.scoring import run as run_score
from distill.teacher.soft_labels import read_soft_labels, write_manifest
from distill.workspace import COMPLETE, Workspace, check_complete, staged_dir, user_os_error
from tests.conftest import TINY_SAMPLE


# ------------------------------------------------------------------------------- 1. no deletion by config
def test_a_data_name_that_is_a_path_is_refused_and_the_folder_survives(make_cfg, shared_data, tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "thesis.txt").write_text("years of work")
    for name in (str(outside), "../precious", "a/b", ".."):
        with pytest.raises(ConfigError, match=r"data\.name=.*a plain name"):
            dataset_dir(make_cfg("data=vaswani", f"data.name={name}"))
    assert (outside / "thesis.txt").read_text() == "years of work"


def test_a_folder_not_made_by_the_project_is_never_replaced(make_cfg, shared_data, tmp_path):
    mine = tmp_path / "data" / "mine"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"exists and was not made by distill.*left untouched"):
        dataset_dir(make_cfg("data=vaswani", "data.name=mine"))
    assert (mine / "notes.txt").read_text() == "keep me"
    # the project's own folder is rebuilt in place when its source options change
    cfg = make_cfg("data=vaswani", "data.name=ours")
    built = dataset_dir(cfg)
    assert (built / "corpus.jsonl").is_file()
    again = dataset_dir(make_cfg("data=vaswani", "data.name=ours", "data.split_seed=3"))
    assert again == built and (built / COMPLETE).is_file()


def test_overwrite_never_deletes_through_a_link_or_what_the_project_did_not_write(gbdt_ws, tmp_path):
    """teacher.overwrite=true once followed a symlinked soft_labels/ and deleted the files it pointed at, and every
    *.tmp of the folder went too. Now a linked folder is refused before anything is touched, and only the
    project's own parts, manifest and temp files are deleted."""
    cfg = gbdt_ws()
    ws = Workspace.from_cfg(cfg)
    mine = ws.soft_labels / "notes.tmp"
    mine.write_text("my notes")
    foreign = ws.soft_labels / "part-00042.parquet"
    pd.DataFrame({"x": [1]}).to_parquet(foreign)  # a user's file with a part's name, no soft-label metadata
    run_score(gbdt_ws("teacher.overwrite=true"))
    assert mine.read_text() == "my notes" and foreign.is_file()
    assert len(read_soft_labels(ws.soft_labels, ws.candidates)) > 0

    elsewhere = tmp_path / "users_folder"
    ws.soft_labels.rename(elsewhere)
    ws.soft_labels.symlink_to(elsewhere, target_is_directory=True)
    before = sorted(p.name for p in elsewhere.iterdir())
    with pytest.raises(
        ConfigError, match=r"soft_labels is a symbolic link to .*users_folder: soft_labels/ is written"
    ):
        run_score(gbdt_ws("teacher.overwrite=true"))
    assert sorted(p.name for p in elsewhere.iterdir()) == before


def test_a_second_writer_of_the_same_model_folder_is_refused_in_one_line(gbdt_ws):
    """Two trainings of one student once shared the staging folder and crashed or mixed files."""
    cfg = gbdt_ws("student=lightgbm")
    dest = Workspace.from_cfg(cfg).model("lightgbm")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); lock.acquire(); "
            "print('held', flush=True); time.sleep(60)",
            str(dest.with_name(".lightgbm.lock")),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(
            ConfigError, match=r"another process is writing .*models/lightgbm right now \(training lightgbm\)"
        ):
            run_gbdt(cfg)
    finally:
        holder.kill()
        holder.wait()
    run_gbdt(cfg)  # the lock dies with its holder: nothing stale is left behind
    check_complete(dest, "")


# ------------------------------------------------------------------------------------ 2. stale inputs
def test_scoring_after_the_candidates_changed_is_refused(gbdt_ws):
    run_candidates(gbdt_ws("retrieval.k1=0.3", "retrieval.b=0.2"))  # other candidates, same k
    # scoring again without the override: its config hash is the old one, the candidates' content is not
    with pytest.raises(DistillError, match=r"holds soft labels from another run.*candidates changed"):
        run_score(gbdt_ws())


def test_students_refuse_soft_labels_of_other_candidates(gbdt_ws):
    ws = Workspace.from_cfg(gbdt_ws())
    run_candidates(gbdt_ws("retrieval.k1=0.3", "retrieval.b=0.2"))
    with pytest.raises(StageNotReadyError, match=r"soft_labels is stale: it was scored on other candidates"):
        read_soft_labels(ws.soft_labels, ws.candidates)
    with pytest.raises(StageNotReadyError, match=r"is stale.*teacher\.overwrite=true"):
        run_gbdt(gbdt_ws("student=lightgbm"))


def test_features_of_other_candidates_are_rebuilt(gbdt_ws):
    cfg = gbdt_ws()
    ws = Workspace.from_cfg(cfg)
    old = load_features(cfg, ws)
    run_candidates(gbdt_ws("retrieval.k1=0.3", "retrieval.b=0.2"))
    new = load_features(cfg, ws)
    cands = pd.read_parquet(ws.candidates)
    assert len(new) == len(cands) and set(zip(new.qid, new.docid)) == set(zip(cands.qid, cands.docid))
    assert set(zip(old.qid, old.docid)) != set(zip(new.qid, new.docid))


def test_a_student_trained_on_other_inputs_is_refused(gbdt_ws):
    cfg = gbdt_ws("student=lightgbm")
    run_gbdt(cfg)
    ws = Workspace.from_cfg(cfg)
    info = json.loads((ws.model("lightgbm") / "student.json").read_text())
    assert set(info["inputs"]) == {"candidates", "soft_labels", "features"}
    ws.check_inputs(ws.model("lightgbm"), info["inputs"], "retrain")  # current: fine
    run_candidates(gbdt_ws("retrieval.k1=0.3", "retrieval.b=0.2"))
    with pytest.raises(
        StageNotReadyError, match=r"models/lightgbm is stale: it was trained on other candidates"
    ):
        ws.check_inputs(ws.model("lightgbm"), info["inputs"], "retrain")


# --------------------------------------------------------------------------------- 3. written whole
def _train_lightgbm_killed_at(point: str, cfg, tmp_path) -> int:
    overrides = [
        f"data.path={cfg.data.path}",
        *TINY_SAMPLE,
        f"paths.output_root={cfg.paths.output_root}",
        f"paths.data_root={cfg.paths.data_root}",
        "logger=none",
        "retrieval.k=15",
        "student=lightgbm",
        "student.num_trees=12",
        "student.early_stopping=3",
        "student.min_data_in_leaf=5",
    ]
    env = {**os.environ, "DISTILL_KILL_AT": f"{point}:1"}
    proc = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "scripts" / "train_student.py"), *overrides],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.returncode


@pytest.mark.parametrize("point", ["staged_written", "staged_between_renames"])
def test_a_kill_while_saving_a_student_keeps_the_previous_model(gbdt_ws, tmp_path, point):
    import lightgbm as lgb

    cfg = gbdt_ws("student=lightgbm", "student.num_trees=6")
    run_gbdt(cfg)
    model_dir = Workspace.from_cfg(cfg).model("lightgbm")
    before = (model_dir / "model.txt").read_bytes()
    assert _train_lightgbm_killed_at(point, cfg, tmp_path) == -9
    check_complete(model_dir, "retrain")  # restores the moved-aside folder after a kill between renames
    assert (model_dir / "model.txt").read_bytes() == before
    lgb.Booster(model_file=str(model_dir / "model.txt"))


def test_a_truncated_model_file_is_refused_in_one_line_before_loading(gbdt_ws):
    cfg = gbdt_ws("student=lightgbm", "student.num_trees=6")
    run_gbdt(cfg)
    model = Workspace.from_cfg(cfg).model("lightgbm") / "model.txt"
    model.write_bytes(model.read_bytes()[:100])  # LightGBM would segfault loading this
    with pytest.raises(DataError, match=r"model\.txt is damaged \(100 bytes instead of \d+\): retrain"):
        check_complete(model.parent, 'retrain it: make train-student ARGS="student=lightgbm"')
    from distill.evaluation.stage import run as run_evaluate

    with pytest.raises(DataError, match=r"model\.txt is damaged"):
        run_evaluate(cfg)


def test_a_failing_writer_leaves_the_previous_folder(tmp_path):
    dest = tmp_path / "m"
    with staged_dir(dest) as tmp:
        (tmp / "a.txt").write_text("v1")
    with pytest.raises(RuntimeError), staged_dir(dest) as tmp:
        (tmp / "a.txt").write_text("v2")
        raise RuntimeError("crash")
    assert (dest / "a.txt").read_text() == "v1" and check_complete(dest, "x") == dest
    # no partial folder is left (the lock file stays: deleting it on release would race with the next locker)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "m"]


def test_a_folder_is_written_over_an_empty_one_and_never_over_a_users(tmp_path):
    (tmp_path / "empty").mkdir()
    with staged_dir(tmp_path / "empty") as tmp:
        (tmp / "a.txt").write_text("v1")
    assert check_complete(tmp_path / "empty", "x") and (tmp_path / "empty" / "a.txt").read_text() == "v1"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with (
        pytest.raises(
            ConfigError, match=r"mine exists and was not made by distill.*choose another model name"
        ),
        staged_dir(tmp_path / "mine", "model name"),
    ):
        raise AssertionError("the body must not run")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# -------------------------------------------------------------------------------- 4. numeric ranges
@pytest.mark.parametrize(
    "override,match",
    [
        ("teacher.shard_size=0", r"teacher\.shard_size=0: must be > 0"),
        ("teacher.batch_tokens=-5", r"teacher\.batch_tokens=-5: must be > 0"),
        ("teacher.max_length=0", r"teacher\.max_length=0: must be > 0"),
        ("retrieval.k=0", r"retrieval\.k=0: must be >= 1"),
        ("retrieval.b=1.5", r"retrieval\.b=1\.5: must be in \[0, 1\]"),
        ("data.test_fraction=2", r"data\.test_fraction=2\.0: must be in \[0, 1\]"),
        ("student.num_trees=0", r"student\.num_trees=0: must be > 0"),
        ("student.val_fraction=1", r"student\.val_fraction=1\.0: must be in \(0, 1\)"),
        ("teacher.train.epochs=0", r"teacher\.train\.epochs=0\.0: must be > 0"),
        ("evaluate.cascade_k=[5,-1]", r"evaluate\.cascade_k=\[5, -1\]: each must be >= 0"),
        ("evaluate.load.workers=0", r"evaluate\.load\.workers=0: must be >= 1"),
    ],
)
def test_numeric_options_have_ranges(make_cfg, override, match):
    with pytest.raises(ConfigError, match=match):
        Workspace.from_cfg(make_cfg(override))


# ---------------------------------------------------------------------------- 5. one-line user errors
def test_disk_full_leaves_no_partial_manifest_and_reads_as_one_line(tmp_path, monkeypatch):
    import distill.teacher.soft_labels as sl

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "manifest.json.tmp"))

    monkeypatch.setattr(sl.json, "dump", full)
    with pytest.raises(OSError) as e:
        write_manifest(tmp_path, {"identity": {}, "shards": {}})
    assert list(tmp_path.iterdir()) == []
    line = user_os_error(e.value)
    assert line is not None and "\n" not in line and line.endswith("the stage resumes")
    assert line.startswith(str(tmp_path / "manifest.json.tmp")) and "disk is full" in line


def test_entry_point_prints_one_line_for_a_workspace_that_is_a_file(tmp_path):
    f = tmp_path / "ws"
    f.write_text("not a folder")
    proc = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "scripts" / "candidates.py"),
            f"paths.workspace={f}",
            "logger=none",
            f"paths.data_root={tmp_path / 'data'}",
            f"data.path={tmp_path / 'sample'}",
            *TINY_SAMPLE,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip().splitlines()[-1]
        == f"error: paths.workspace={f} is a file, not a folder: point paths.workspace at a folder"
    )


def test_truncated_safetensors_is_one_line(tiny_model_dir, tmp_path):
    import shutil

    from distill.teacher.model import load_teacher

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    w = bad / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(ConfigError, match=r"a weights file is damaged or truncated \(SafetensorError"):
        load_teacher(str(bad), device="cpu")


def test_a_dataset_without_train_judgements_names_what_to_add(tiny_beir, make_cfg):
    root = tiny_beir()
    (root / "qrels" / "test.tsv").rename(root / "qrels" / "dev.tsv")
    cfg = make_cfg("data=beir", f"data.path={root}", "retrieval.k=3")
    run_candidates(cfg)
    from distill.teacher.train import run as run_train

    with pytest.raises(DataError, match=r"train-teacher needs judged train queries.*add qrels/train\.tsv"):
        run_train(cfg)


# ---------------------------------------------------------------------------------- 6. click log
def _with_clicks(root: Path, rows: list[dict]) -> Path:
    (root / "logs").mkdir(exist_ok=True)
    pd.DataFrame(rows).to_parquet(root / "logs" / "impressions.parquet")
    return root


CLICK = {
    "qid": "q1",
    "docid": "d1",
    "position": 1,
    "clicked": True,
    "dwell_s": 5.0,
    "timestamp": "2024-01-01T00:00:00Z",
}


def test_negative_click_positions_are_refused_or_quarantined_with_a_count(tiny_beir):
    rows = [CLICK, {**CLICK, "position": -3}, {**CLICK, "position": 0}, {**CLICK, "position": 2}]
    root = _with_clicks(tiny_beir(), rows)
    ds = load_beir(root)  # the click log is read (and checked) when a stage first asks for it
    with pytest.raises(DataError, match=r"impressions\.parquet: row 2: position must be a whole number >= 1"):
        _ = ds.clicks
    ds = load_beir(root, on_error="drop")
    assert ds.clicks.position.tolist() == [1, 2]
    assert ds.quarantine.counts() == {"impressions.parquet: bad position": 2}


def test_one_timestamp_parser_for_corpus_and_clicks(tiny_beir):
    mixed = ["2024-01-01T00:00:00Z", "2024-01-01T02:00:00", "2024-01-01T03:00:00+01:00"]
    root = _with_clicks(tiny_beir(), [{**CLICK, "timestamp": t} for t in mixed])
    ds = load_beir(root)
    assert [str(t) for t in ds.clicks.timestamp] == [
        "2024-01-01 00:00:00+00:00",
        "2024-01-01 02:00:00+00:00",
        "2024-01-01 02:00:00+00:00",
    ]


# ------------------------------------------------------------------------------------ 7. BOM
def test_a_utf8_bom_is_accepted_in_every_input_file(tiny_beir):
    root = tiny_beir()
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        f = root / name
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    ds = load_beir(root)
    assert len(ds.corpus) == 4 and len(ds.queries) == 2 and len(ds.qrels["test"]) == 3
    assert "d1" in ds.corpus.index and "q1" in ds.queries.index


# ------------------------------------------------------------------------------ BEIR judged on test only
def test_a_beir_folder_judged_on_test_only_gets_a_deterministic_split(tmp_path, make_cfg, caplog):
    from tests.conftest import write_jsonl

    root = tmp_path / "beir"
    write_jsonl(
        root / "corpus.jsonl", [{"_id": f"d{i}", "title": "", "text": f"word{i} common"} for i in range(30)]
    )
    write_jsonl(root / "queries.jsonl", [{"_id": f"q{i}", "text": f"word{i}"} for i in range(20)])
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(20))
    )
    cfg = make_cfg("data=beir", f"data.path={root}", "data.name=beir", "retrieval.k=5")
    with caplog.at_level("WARNING"):
        ds = load_dataset(cfg)
    assert "has no train split" in caplog.text and "data.test_fraction=0.5" in caplog.text
    train, test = set(ds.qrels["train"].qid), set(ds.qrels["test"].qid)
    assert train and test and not train & test and train | test == {f"q{i}" for i in range(20)}
    assert set(load_dataset(cfg).qrels["train"].qid) == train  # deterministic
    run_candidates(cfg)
    cands = pd.read_parquet(Path(cfg.paths.workspace) / "candidates.parquet")
    assert set(cands.split) == {"train", "test"}
    assert not (root / "qrels" / "train.tsv").exists()  # the user's folder is not touched
    np.testing.assert_array_equal(sorted(cands[cands.split == "train"].qid.unique()), sorted(train))
