"""The teacher benchmark's accounting (distill/bench/teacher.py): useful FLOPs counted from the model's own
layers, checked against hand counts."""

from __future__ import annotations

import numpy as np
import pytest


def test_useful_flops_of_a_causal_reranker_counted_by_hand(tmp_path):
    """The bench's useful FLOPs: the layers' linear weights counted by hand for a tiny Qwen3 shape (q, k, v, o
    and gate, up, down projections per layer; grouped key-value heads), attention halved as the model is causal."""
    from distill.bench.teacher import layer_linear_weights, model_tflop
    from distill.teacher.synthetic import build_llm_reranker

    tiny = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, vocab_size=100)  # fmt: skip
    folder = build_llm_reranker(tmp_path / "m", ["solar energy storage", "cats", "dogs chase cats"], **tiny)
    h, width, kv, inter = 64, 4 * 16, 2 * 16, 128
    per_layer = h * width + 2 * h * kv + width * h + 3 * h * inter
    assert layer_linear_weights(folder) == (2 * per_layer, 2, width, True)
    n = np.array([10, 20])
    expected = 2 * 2 * per_layer * 30 + 4 * 2 * width * (100 + 400) * 0.5
    assert model_tflop(folder, n) * 1e12 == pytest.approx(expected)


def test_bench_flops_of_a_bert_cross_encoder(tiny_model_dir):
    """A BERT layer: q, k, v, o (h x h each) and the two feed-forward maps (h x intermediate); bidirectional."""
    from transformers import AutoConfig

    from distill.bench.teacher import layer_linear_weights

    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    h, inter, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    assert layer_linear_weights(tiny_model_dir) == (layers * (4 * h * h + 2 * h * inter), layers, h, False)
