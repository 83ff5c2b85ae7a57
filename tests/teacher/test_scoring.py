import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from distill.errors import DataError, DistillError, StageNotReadyError
from distill.retrieval.candidates import iter_shards
from distill.retrieval.candidates import run as run_candidates
from distill.teacher.ensemble import combine, normalise
from distill.teacher.scoring import run as run_score
from distill.teacher.soft_labels import read_soft_labels


@pytest.fixture
def scored_ws(tiny_sample_cfg, tiny_model_dir):
    """A tiny sample workspace with candidates; returns a cfg factory for scoring it with the tiny model."""

    def cfg(*o):
        return tiny_sample_cfg(
            "retrieval.k=15",
            f"teacher.model={tiny_model_dir}",
            "teacher.max_length=64",
            "teacher.shard_size=100",
            "teacher.batch_tokens=512",
            *o,
        )

    run_candidates(cfg())
    return cfg


def labels(cfg):
    return read_soft_labels(Path(cfg.paths.workspace) / "soft_labels")


def test_scores_every_candidate_once_in_order(scored_ws):
    cfg = scored_ws()
    summary = run_score(cfg)
    cands = pd.read_parquet(f"{cfg.paths.workspace}/candidates.parquet")
    sl = labels(cfg)
    assert summary["pairs"] == len(cands) == len(sl) and summary["scored"] == len(cands)
    assert (sl.qid.to_numpy() == cands.qid.to_numpy()).all() and (
        sl.docid.to_numpy() == cands.docid.to_numpy()
    ).all()
    assert sl.score.dtype == np.float32 and np.isfinite(sl.score).all()
    root = Path(cfg.paths.workspace) / "soft_labels"
    parts = sorted(
        root / v["file"] for v in json.loads((root / "manifest.json").read_text())["shards"].values()
    )
    assert len(parts) > 3  # shard_size=100 over ~900 pairs
    meta = json.loads(pq.read_schema(parts[0]).metadata[b"distill"])
    assert meta["schema_version"] == 1 and meta["max_length"] == 64 and meta["dtype"] == "fp32"
    assert meta["teachers"][0]["revision"].startswith("sha256:") and "created" in meta and "dataset" in meta
    # every shard ends at a query boundary
    qids_per_part = [set(pd.read_parquet(p).qid) for p in parts]
    assert all(not (a & b) for a, b in zip(qids_per_part, qids_per_part[1:]))


def test_rerun_skips_finished_shards_and_redoes_corrupted(scored_ws):
    cfg = scored_ws()
    run_score(cfg)
    first = labels(cfg)
    root = f"{cfg.paths.workspace}/soft_labels"
    again = run_score(cfg)
    assert again["scored"] == 0 and again["skipped"] == again["pairs"]
    # truncate one part, delete another, leave a stray temp file, corrupt the manifest
    with open(f"{root}/part-00001.parquet", "r+b") as fh:
        fh.truncate(100)
    os.remove(f"{root}/part-00002.parquet")
    open(f"{root}/part-00003.parquet.tmp", "wb").write(b"partial")
    open(f"{root}/manifest.json", "w").write("{not json")
    redo = run_score(cfg)
    assert 0 < redo["scored"] < redo["pairs"]
    after = labels(cfg)
    pd.testing.assert_frame_equal(first, after)
    assert not list(Path(root).glob("*.tmp"))


def test_resume_with_other_settings_is_refused(scored_ws, tiny_two_label_dir):
    run_score(scored_ws())
    with pytest.raises(
        DistillError, match=r"holds soft labels from another run.*max_length 32.*teacher.overwrite=true"
    ):
        run_score(scored_ws("teacher.max_length=32"))
    with pytest.raises(DistillError, match="another run"):
        run_score(scored_ws(f"teacher.model={tiny_two_label_dir}"))
    with pytest.raises(DistillError, match="dtype bf16"):
        run_score(scored_ws("teacher.dtype=bf16"))
    assert run_score(scored_ws("teacher.max_length=32", "teacher.overwrite=true"))["scored"] > 0


def test_ensemble_columns_and_combined_score(scored_ws, tiny_model_dir, tiny_two_label_dir):
    cfg = scored_ws(f"teacher.ensemble=[{tiny_model_dir},{tiny_two_label_dir}]")
    run_score(cfg)
    sl = labels(cfg)
    cols = [c for c in sl.columns if c.startswith("score_")]
    assert len(cols) == 2
    expected = combine([sl[c].to_numpy() for c in cols], sl.qid, "zscore")
    np.testing.assert_allclose(sl.score, expected, atol=1e-6)
    assert abs(sl.groupby("qid").score.mean()).max() < 1e-4


def test_normalisations():
    s = pd.Series([1.0, 2.0, 3.0, 10.0, 10.0])
    q = pd.Series(["a", "a", "a", "b", "b"])
    np.testing.assert_allclose(normalise(s, q, "minmax"), [0, 0.5, 1, 0, 0])
    np.testing.assert_allclose(normalise(s, q, "rank"), [0, 0.5, 1, 0.5, 0.5])
    np.testing.assert_allclose(normalise(s, q, "zscore")[:3], np.array([-1, 0, 1]) / np.std([1, 2, 3]))


def test_missing_stage_and_ungrouped_candidates(scored_ws, tmp_path):
    cfg = scored_ws("teacher.model=trained")
    with pytest.raises(StageNotReadyError, match="make train-teacher"):
        run_score(cfg)
    bad = pd.DataFrame({"qid": ["a", "b", "a"], "docid": ["1", "2", "3"]})
    bad.to_parquet(tmp_path / "c.parquet")
    with pytest.raises(DataError, match=r"row 3: qid 'a' appears again"):
        list(iter_shards(tmp_path / "c.parquet", 10))


def test_duplicate_pairs_are_dropped_and_counted(scored_ws):
    cfg = scored_ws()
    path = f"{cfg.paths.workspace}/candidates.parquet"
    c = pd.read_parquet(path)
    c = pd.concat([c.iloc[:3], c.iloc[[1]], c.iloc[3:]], ignore_index=True)
    c.to_parquet(path)
    s = run_score(cfg)
    assert s["duplicates_dropped"] == 1 and s["pairs"] == len(c)
    assert len(labels(cfg)) == len(c) - 1


def test_shards_cut_at_query_boundaries(tmp_path):
    import pyarrow as pa

    df = pd.DataFrame({"qid": ["a"] * 5 + ["b"] * 3 + ["c"] * 4, "docid": [str(i) for i in range(12)]})
    path = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pandas(df), path, row_group_size=2)
    shards = list(iter_shards(Path(path), 4))
    assert [len(s) for s in shards] == [5, 7] or [len(s) for s in shards] == [5, 3, 4]
    assert sum(len(s) for s in shards) == 12
    assert all(s.qid.iloc[-1] != n.qid.iloc[0] for s, n in zip(shards, shards[1:]))


@pytest.mark.parametrize(
    "frame,match",
    [
        (pd.DataFrame({"qid": ["a"], "docid": ["1"]}), r"missing column\(s\) \['score'\]"),
        (pd.DataFrame({"qid": ["a"], "docid": ["1"], "score": [3]}), "must be float scores"),
        (
            pd.DataFrame({"qid": ["a", "b"], "docid": ["1", "2"], "score": [0.5, np.inf]}),
            r"1 non-finite score\(s\).*row 2 \(qid 'b', docid '2'\)",
        ),
        (pd.DataFrame({"qid": ["a"], "docid": ["1"], "score": [np.nan]}), "non-finite"),
    ],
)
def test_soft_label_validation(frame, match):
    from distill.teacher.soft_labels import validate_soft_labels

    with pytest.raises(DataError, match=match):
        validate_soft_labels(frame, "soft_labels/part-00000.parquet")


def test_resume_after_the_teacher_folder_changed_is_refused(scored_ws, tiny_model_dir, tmp_path):
    """A local teacher's revision is the content hash of its folder: new weights under the same path are refused."""
    import shutil

    import torch
    from transformers import AutoModelForSequenceClassification

    teacher = tmp_path / "teacher_copy"
    shutil.copytree(tiny_model_dir, teacher)
    run_score(scored_ws(f"teacher.model={teacher}"))
    model = AutoModelForSequenceClassification.from_pretrained(teacher)
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    model.save_pretrained(teacher)
    with pytest.raises(DistillError, match=r"another run.*teacher_copy@sha256:.*teacher.overwrite=true"):
        run_score(scored_ws(f"teacher.model={teacher}"))


def test_the_instruction_can_come_from_a_file(tmp_path):
    from omegaconf import OmegaConf

    from distill.errors import ConfigError, DataError
    from distill.teacher.schema import TeacherConfig
    from distill.teacher.scoring import configured_prompt

    f = tmp_path / "instruction.txt"
    f.write_text("Given a web search query, retrieve relevant passages, 'quoted'\n")
    t = OmegaConf.structured(TeacherConfig(prompt_file=str(f)))
    assert configured_prompt(t) == "Given a web search query, retrieve relevant passages, 'quoted'"
    f.write_text("  \n")
    with pytest.raises(DataError, match="teacher.prompt_file=.*is empty"):
        configured_prompt(t)
    with pytest.raises(ConfigError, match="give teacher.prompt or teacher.prompt_file, not both"):
        TeacherConfig(prompt="x", prompt_file=str(f))
