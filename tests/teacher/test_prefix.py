"""Shared-prefix scoring of causal-LM rerankers (distill/teacher/prefix.py): each query's common token prefix is
encoded once and its cache serves every candidate; the scores equal sentence-transformers' CrossEncoder.predict
(fp32, within 1e-4) with identical rankings, whatever the budget, the order, or the number of candidates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.errors import ConfigError
from distill.teacher.engine import ScoringEngine
from distill.teacher.model import load_teacher
from distill.teacher.prefix import common_prefix
from tests.teacher import tiny_models

# three queries with several candidates of varied length, one with a single candidate
Q = ["cat on a mat"] * 7 + ["markets"] * 5 + ["fox jumps"] * 6 + ["yes dogs"]
D = (
    ["the cat sat on the mat " * k for k in range(1, 8)]
    + ["stock markets fell sharply today " * k for k in range(1, 6)]
    + ["a quick brown fox jumps over salmon " * k for k in range(1, 7)]
    + ["dogs chase cats in the park"]
)


@pytest.fixture(scope="module")
def causal_dirs(tmp_path_factory):
    return {arch: tiny_models.build(arch, tmp_path_factory.mktemp(arch)) for arch in tiny_models.CAUSAL}


def predict(folder, queries, docs) -> np.ndarray:
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(str(folder), device="cpu", activation_fn=torch.nn.Identity())
    return ce.predict(list(zip(queries, docs)), batch_size=4, show_progress_bar=False)


def test_common_prefix_leaves_each_sequence_a_token():
    a, b = np.array([1, 2, 3, 4]), np.array([1, 2, 3, 5, 6])
    assert common_prefix([a, b]) == 3
    assert common_prefix([a, a]) == 3  # identical sequences: the last token still runs with the suffix
    assert common_prefix([a, np.array([9, 2])]) == 0


@pytest.mark.parametrize("arch", tiny_models.CAUSAL)
def test_shared_prefixes_score_as_crossencoder_predict(causal_dirs, arch):
    folder = causal_dirs[arch]
    ref = predict(folder, Q, D)
    assert ref.std() > 0.05
    teacher = load_teacher(str(folder), device="cpu", dtype="fp32")
    perm = np.random.default_rng(1).permutation(len(Q))
    for budget in (64, 4096):
        engine = ScoringEngine(teacher, batch_tokens=budget, prefix_cache="on")
        got = engine.score(Q, D)
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
        assert engine.stats.prefix_tokens_saved > 0
        for q in set(Q):  # the same ranking within every query
            rows = [i for i, x in enumerate(Q) if x == q]
            assert list(np.argsort(-got[rows], kind="stable")) == list(np.argsort(-ref[rows], kind="stable"))
        shuffled = ScoringEngine(teacher, batch_tokens=budget, prefix_cache="on").score(
            [Q[i] for i in perm], [D[i] for i in perm]
        )
        np.testing.assert_allclose(shuffled, ref[perm], atol=1e-4, rtol=0)


def test_auto_uses_the_prefix_where_it_pays_and_never_on_an_encoder(causal_dirs, tmp_path):
    teacher = load_teacher(str(causal_dirs["qwen3"]), device="cpu", dtype="fp32")
    auto = ScoringEngine(teacher, prefix_cache="auto")
    auto.score(Q, D)
    assert auto.stats.prefix_tokens_saved > 0
    never = ScoringEngine(teacher, prefix_cache="auto", prefix_min_share=1.0)
    never.score(Q, D)
    assert never.stats.prefix_tokens_saved == 0
    encoder = load_teacher(str(tiny_models.build("bert", tmp_path / "bert")), device="cpu")
    assert ScoringEngine(encoder, prefix_cache="auto").prefix is None
    with pytest.raises(ConfigError, match=r"teacher.prefix_cache=on: .* is not a causal-LM reranker"):
        ScoringEngine(encoder, prefix_cache="on")
