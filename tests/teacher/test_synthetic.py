"""The synthetic rerankers (distill/teacher/synthetic.py) the benchmarks and tests build locally: each is a real
reranker of its family, scored by the engine exactly as sentence-transformers' CrossEncoder scores it."""

from __future__ import annotations

import numpy as np


def test_llm_reranker_is_a_yes_no_reranker_the_engine_scores_as_crossencoder(tmp_path):
    """`make bench --settings llm` builds Qwen3-Reranker-0.6B's shape; here the same builder at a tiny width."""
    import torch
    from sentence_transformers import CrossEncoder

    from distill.teacher.engine import ScoringEngine
    from distill.teacher.model import load_teacher
    from distill.teacher.synthetic import build_llm_reranker

    pairs = [
        ("solar energy storage", "batteries store solar power for the night"),
        ("cats", "dogs chase cats"),
    ] * 3
    tiny = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, vocab_size=100)  # fmt: skip
    folder = build_llm_reranker(tmp_path / "m", pairs, **tiny)
    ce = CrossEncoder(str(folder), activation_fn=torch.nn.Identity(), device="cpu")
    assert [type(m).__name__ for m in ce] == ["Transformer", "LogitScore"]
    tok = ce.tokenizer
    assert len(tok.tokenize("yes")) == 1 and len(tok.tokenize("no")) == 1
    got = ScoringEngine(load_teacher(str(folder), dtype="fp32", device="cpu")).score(*zip(*pairs))
    np.testing.assert_allclose(got, ce.predict(pairs), atol=1e-5)


def test_real_minilm_is_the_shared_encoder_with_a_trained_head(tmp_path, shared_data):
    """`make bench --models real`: all-MiniLM-L6-v2's encoder weights, a fine-tuned 1-logit head."""
    import torch
    from safetensors.torch import load_file
    from sentence_transformers import CrossEncoder

    from distill.teacher.engine import ScoringEngine
    from distill.teacher.model import load_teacher
    from distill.teacher.synthetic import build_real_minilm

    sample = shared_data / "flagembedding_msmarco_sample" / "reranker_examples.jsonl"
    folder = build_real_minilm(tmp_path / "real", shared_data / "all_minilm_l6_v2", sample, steps=2)
    ours = load_file(folder / "model.safetensors")
    src = load_file(shared_data / "all_minilm_l6_v2" / "model.safetensors")
    key = "encoder.layer.5.output.dense.weight"
    assert torch.equal(
        ours["bert." + key], src[key]
    )  # the encoder is the shared one; only the head is fitted
    pairs = [
        ("solar energy storage", "batteries store solar power for the night"),
        ("cats", "dogs chase cats"),
    ]
    ce = CrossEncoder(str(folder), activation_fn=torch.nn.Identity(), device="cpu")
    got = ScoringEngine(load_teacher(str(folder), dtype="fp32", device="cpu")).score(*zip(*pairs))
    np.testing.assert_allclose(got, ce.predict(pairs), atol=1e-5)
