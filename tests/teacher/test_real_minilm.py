"""The real all-MiniLM-L6-v2 weights in ../shared/data: refused as a teacher as it stands (a bi-encoder, its
head would be new), fine-tuned into a cross-encoder by train-teacher (a new head, on purpose), which then scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distill.errors import ConfigError
from distill.retrieval.candidates import run as run_candidates
from distill.teacher.model import load_teacher
from distill.teacher.scoring import run as run_score
from distill.teacher.soft_labels import read_soft_labels
from distill.teacher.train import run as run_train


def test_real_minilm_is_refused_as_a_teacher(shared_data):
    path = shared_data / "all_minilm_l6_v2"
    with pytest.raises(ConfigError, match=r"bi-encoder \(SentenceTransformer\) folder .*not a cross-encoder"):
        load_teacher(str(path), device="cpu")


def test_real_minilm_fine_tunes_into_a_teacher_that_scores(shared_data, tiny_sample_cfg):
    base = shared_data / "all_minilm_l6_v2"
    cfg = tiny_sample_cfg(
        "retrieval.k=8",
        f"teacher.train.base_model={base}",
        "teacher.train.epochs=1",
        "teacher.train.negatives=3",
        "teacher.train.max_length=48",
        "teacher.train.batch_size=8",
        "teacher.max_length=48",
    )
    run_candidates(cfg)
    info = run_train(cfg)
    assert info["steps"] > 0 and np.isfinite(info["train_loss"]) and info["base_model"] == str(base)
    teacher = load_teacher(str(Path(cfg.paths.workspace) / "models" / "teacher"), device="cpu")
    assert teacher.family == "encoder" and teacher.num_labels == 1
    # the encoder kept its pretrained weights: the fine-tuned teacher's embeddings are the shared model's
    from safetensors import safe_open

    with (
        safe_open(str(base / "model.safetensors"), "pt") as src,
        safe_open(str(Path(cfg.paths.workspace) / "models/teacher/model.safetensors"), "pt") as dst,
    ):
        key = next(k for k in src.keys() if k.endswith("word_embeddings.weight"))  # noqa: SIM118
        got = next(k for k in dst.keys() if k.endswith("word_embeddings.weight"))  # noqa: SIM118
        assert (
            np.corrcoef(src.get_tensor(key).flatten()[:5000], dst.get_tensor(got).flatten()[:5000])[0, 1]
            > 0.99
        )
    s = run_score(cfg)
    labels = read_soft_labels(Path(cfg.paths.workspace) / "soft_labels")
    assert s["scored"] == len(labels) > 0 and labels.score.std() > 0
