import numpy as np
import pytest
import torch

from distill.errors import ConfigError
from distill.teacher.engine import ScoringEngine, plan_batches
from distill.teacher.model import load_teacher
from tests.helpers import reference_scores

Q = ["cat on a mat", "markets", "fox"] * 7
D = (
    ["the cat sat on the mat " * k for k in range(1, 8)]
    + ["stock markets fell"] * 7
    + ["a quick brown fox"] * 7
)


def test_plan_batches_respects_budget_and_covers_all():
    lengths = np.array([5, 60, 12, 12, 33, 7, 60, 1])
    batches = plan_batches(lengths, batch_tokens=64, max_batch_size=4)
    assert sorted(np.concatenate(batches).tolist()) == list(range(8))
    for b in batches:
        assert len(b) * lengths[b].max() <= 64 and len(b) <= 4


def test_plan_batches_bounds_padding():
    # a pair joins a batch if padding it costs at most 12.5% of the width or at most 16 tokens
    lengths = np.array([100, 95, 90, 87, 80, 50, 45, 40, 30, 20, 10, 5, 1])
    batches = plan_batches(lengths, batch_tokens=10_000, max_batch_size=100)
    assert [lengths[b].tolist() for b in batches] == [
        [100, 95, 90, 87],
        [80],
        [50, 45, 40],
        [30, 20],
        [10, 5, 1],
    ]
    # max_padding=1 turns the bound off: the budget alone cuts
    assert len(plan_batches(lengths, batch_tokens=10_000, max_batch_size=100, max_padding=1.0)) == 1


@pytest.mark.parametrize("batch_tokens", [64, 200, 4096])
def test_engine_matches_unbatched_reference_in_original_order(tiny_model_dir, batch_tokens):
    ce = load_teacher(str(tiny_model_dir), max_length=64, device="cpu")
    engine = ScoringEngine(ce, batch_tokens=batch_tokens, chunk_pairs=8)
    got = engine.score(Q, D)
    ref = reference_scores(tiny_model_dir, Q, D)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert engine.stats.pairs == len(Q) and 0 <= engine.stats.padding_overhead < 1


def test_two_label_model_scores_relevant_minus_other(tiny_two_label_dir):
    ce = load_teacher(str(tiny_two_label_dir), max_length=64, device="cpu")
    assert ce.num_labels == 2
    np.testing.assert_allclose(
        ScoringEngine(ce, batch_tokens=256).score(Q, D), reference_scores(tiny_two_label_dir, Q, D), atol=1e-5
    )


def test_over_long_input_is_truncated_not_a_crash(tiny_model_dir):
    ce = load_teacher(str(tiny_model_dir), max_length=10_000, device="cpu")
    assert ce.max_length == 64  # capped to the position embeddings
    s = ScoringEngine(ce, batch_tokens=256).score(["cat " * 500, "cat"], ["mat " * 100_000, "mat " * 63])
    assert np.isfinite(s).all()


def test_oom_halves_budget_and_loses_no_pair(tiny_model_dir, monkeypatch):
    ce = load_teacher(str(tiny_model_dir), max_length=64, device="cpu")
    engine = ScoringEngine(ce, batch_tokens=4096)
    real = engine._forward

    def flaky(batch):
        if batch["input_ids"].numel() > 100:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(batch)

    monkeypatch.setattr(engine, "_forward", flaky)
    got = engine.score(Q, D)
    np.testing.assert_allclose(got, reference_scores(tiny_model_dir, Q, D), atol=1e-5)
    assert engine.stats.oom_retries >= 1 and engine.batch_tokens < 4096


def test_bad_model_and_dtype(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match="cannot load it as a Hugging Face model"):
        load_teacher(str(tmp_path / "nope"), device="cpu")
    with pytest.raises(ConfigError, match="teacher.dtype='fp8'"):
        load_teacher(str(tiny_model_dir), dtype="fp8", device="cpu")


def test_bf16_scores_close_to_fp32(tiny_model_dir):
    fp32 = ScoringEngine(load_teacher(str(tiny_model_dir), device="cpu")).score(Q, D)
    bf16 = ScoringEngine(load_teacher(str(tiny_model_dir), dtype="bf16", device="cpu")).score(Q, D)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, fp32, atol=0.05)


@pytest.mark.slow
def test_compiled_model_scores_like_eager(tiny_model_dir):
    eager = ScoringEngine(load_teacher(str(tiny_model_dir), device="cpu")).score(Q, D)
    compiled = ScoringEngine(load_teacher(str(tiny_model_dir), device="cpu", compile=True)).score(Q, D)
    np.testing.assert_allclose(compiled, eager, atol=1e-5)


def test_non_finite_scores_stop_the_run_with_a_hint(tiny_model_dir):
    ce = load_teacher(str(tiny_model_dir), max_length=64, device="cpu")
    ce.model.classifier.bias.data.fill_(float("inf"))
    with pytest.raises(ConfigError, match="non-finite scores"):
        ScoringEngine(ce, batch_tokens=256).score(Q, D)


def test_scores_do_not_depend_on_batch_size_or_input_order(tiny_model_dir):
    ce = load_teacher(str(tiny_model_dir), max_length=64, device="cpu")
    base = ScoringEngine(ce, batch_tokens=4096).score(Q, D)
    perm = np.random.default_rng(0).permutation(len(Q))
    for budget, chunk in [(64, 4), (300, 8), (100_000, 1000)]:
        got = ScoringEngine(ce, batch_tokens=budget, chunk_pairs=chunk).score(
            [Q[i] for i in perm], [D[i] for i in perm]
        )
        np.testing.assert_allclose(got, base[perm], atol=1e-5)


def test_auto_dtype_follows_the_hardware(monkeypatch):
    import distill.teacher.model as m

    assert m.resolve_dtype("auto", torch.device("cuda")) == "fp16"
    monkeypatch.setattr(m, "cpu_has_native_bf16", lambda: True)
    assert m.resolve_dtype("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(m, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(m, "static_int8_available", lambda: True)
    # int8 is tried first by a caller that calibrates it on its pairs (the scoring job), never by the others
    assert m.resolve_dtype("auto", torch.device("cpu"), calibrated=True) == "int8"
    assert m.resolve_dtype("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(m, "static_int8_available", lambda: False)
    assert m.resolve_dtype("auto", torch.device("cpu"), calibrated=True) == "fp32"
    assert m.resolve_dtype("fp32", torch.device("cpu")) == "fp32"


def test_native_bf16_detection_agrees_with_the_kernel_flags():
    from pathlib import Path

    from distill.teacher.model import cpu_has_native_bf16

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    flags = set(cpuinfo.read_text().split())
    assert cpu_has_native_bf16() == bool({"amx_bf16", "avx512_bf16"} & flags)


def test_the_first_chunk_is_small_and_the_chunks_cover_every_pair_once(tiny_model_dir, monkeypatch):
    ce = load_teacher(str(tiny_model_dir), max_length=64, device="cpu")
    engine = ScoringEngine(ce, chunk_pairs=10_000)
    assert engine.chunk_starts(0) == [] and engine.chunk_starts(5) == [0]
    assert engine.chunk_starts(30_000) == [0, 1024, 11_024, 21_024]  # the model starts after 1,024 pairs
    base = ScoringEngine(ce, batch_tokens=4096).score(Q, D)
    monkeypatch.setattr(ScoringEngine, "FIRST_CHUNK", 3)
    small = ScoringEngine(ce, batch_tokens=4096, chunk_pairs=7)
    assert small.chunk_starts(len(Q))[:3] == [0, 3, 10]
    np.testing.assert_allclose(small.score(Q, D), base, atol=1e-5)
