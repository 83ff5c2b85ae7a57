"""Teacher-scoring throughput (`make bench`, distill/bench/cli.py): the project's engine against
sentence-transformers' `CrossEncoder.predict`.

Same model (the MiniLM-L6 cross-encoder shape from ../shared/data with seeded random weights: it costs what
the real model costs), same pairs (real MS MARCO passages and Vaswani abstracts with their natural length
spread; asking for more pairs than exist repeats them), same process and thread count. Each side is warmed up,
then timed `repeats` times; the best time of each is kept (these machines are noisy). On a GPU each line also
gives the engine's useful TFLOP/s (matrix products over real tokens, padding excluded) and its fraction of the
GPU's bf16 peak: both the datasheet figure and a measured 8192^3 bf16 matrix product. One JSON line per setting:

    fp32     engine fp32 vs CrossEncoder fp32
    bf16     engine bf16 vs CrossEncoder loaded in bf16
    int8     engine with static int8 through OpenVINO (CPU; calibrated on 256 other real pairs against
             --min-spearman / --min-kendall, distill/teacher/int8.py) vs CrossEncoder fp32
    default  engine with teacher.dtype=auto vs CrossEncoder's default (fp32)
    fp16     engine fp16 vs CrossEncoder fp32 (GPU)
    NAME+compile  any of the above with teacher.compile=true, e.g. default+compile
    llm      an LLM reranker of Qwen3-Reranker-0.6B's shape (Qwen3 causal LM, 28 layers of width 1024, yes/no
             logit at the last token; seeded random weights, a byte-level BPE tokenizer trained on the bench
             texts), engine fp32 vs CrossEncoder fp32 on `--llm-pairs` pairs (about 100x MiniLM-L6's cost);
             llm-bf16 / llm-fp16 compare both sides in that precision (GPU)
    gbdt     GBDT student: listnet_kd vs lambdarank training time, and scoring 1,000 candidates
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import kendalltau, spearmanr

from distill.data.convert import parse_trec_docs, parse_trec_qrels, parse_trec_topics, read_flagembedding
from distill.ir.timing import best_of
from distill.teacher.calibration import int8_teacher
from distill.teacher.engine import ScoringEngine
from distill.teacher.model import load_teacher
from distill.teacher.synthetic import build_llm_reranker, build_random_minilm, build_real_minilm

SHARED = Path(
    os.environ.get("DISTILL_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data")
)


def real_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """MS MARCO sample pairs, then Vaswani (query, judged or random abstract) pairs, shuffled, n of them."""
    pairs = [
        (r["query"], p)
        for r in read_flagembedding(SHARED / "flagembedding_msmarco_sample" / "reranker_examples.jsonl")
        for p in r["pos"] + r["neg"]
    ]
    v = SHARED / "vaswani_npl"
    docs = {d["_id"]: d["text"] for d in parse_trec_docs((v / "doc-text.trec").read_text())}
    topics = {t["_id"]: t["text"] for t in parse_trec_topics((v / "query-text.trec").read_text())}
    rng = np.random.default_rng(seed)
    ids = list(docs)
    for qid, did, _ in parse_trec_qrels((v / "qrels").read_text()):
        pairs.append((topics[qid], docs[did]))
        pairs.append((topics[qid], docs[ids[rng.integers(len(ids))]]))
    order = rng.permutation(len(pairs))
    return [pairs[i] for i in np.resize(order, n)]


def build_bench_model(dest: Path, seed: int = 0) -> Path:
    return build_random_minilm(dest, SHARED / "minilm_l6_cross_encoder_config", seed)


def build_real_bench_model(dest: Path, seed: int = 0) -> Path:
    sample = SHARED / "flagembedding_msmarco_sample" / "reranker_examples.jsonl"
    return build_real_minilm(dest, SHARED / "all_minilm_l6_v2", sample, seed)


# Dense bf16 tensor-core peaks from the datasheets (TFLOP/s, without sparsity).
BF16_PEAK_TFLOPS = {"H100 80GB HBM3": 989.4, "H100 PCIe": 756.0, "H200": 989.4, "A100": 312.0, "L4": 121.0}


def layer_linear_weights(model_dir: Path) -> tuple[int, int, int, bool]:
    """(weights of the linear maps inside the transformer layers, layers, attention width, causal) of the model
    in `model_dir`, counted on the meta device (nothing is allocated): embeddings and output heads are left out,
    since a reranker applies its head to one position per pair."""
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        body = AutoModel.from_config(cfg)
    linear = sum(
        m.weight.numel()
        for name, m in body.named_modules()
        if isinstance(m, torch.nn.Linear) and ".layer" in f".{name}"
    )
    heads = cfg.num_attention_heads
    width = heads * (getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    causal = any(a.endswith("ForCausalLM") for a in cfg.architectures or []) or bool(cfg.is_decoder)
    return linear, cfg.num_hidden_layers, width, causal


def model_tflop(model_dir: Path, lengths: np.ndarray) -> float:
    """Useful forward FLOPs (TFLOP) of the reranker over pairs of `lengths` real tokens (prompt or chat template
    included, padding excluded): 2 x the layers' linear weights per token, plus attention's QK^T and AV,
    4 x n^2 x attention width per layer and pair (half of it in a causal model)."""
    linear, layers, width, causal = layer_linear_weights(model_dir)
    n = np.asarray(lengths, dtype=np.float64)
    attention = 4 * layers * width * (n**2).sum() * (0.5 if causal else 1.0)
    return float((2 * linear * n.sum() + attention) / 1e12)


def measured_bf16_peak(size: int = 8192, reps: int = 10) -> float:
    """TFLOP/s of a size^3 bf16 matrix product on the current GPU (mean of `reps` after warm-up)."""
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * reps / (time.perf_counter() - t) / 1e12


def _datasheet_peak(name: str) -> float | None:
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)


# real pairs an int8 teacher is calibrated on (another draw than the measured pairs)
INT8_CALIBRATION_PAIRS = 256


def bench_setting(
    name: str,
    model_dir: Path,
    pairs: list,
    *,
    engine_dtype: str,
    st_dtype: torch.dtype,
    max_length: int,
    batch_tokens: int,
    repeats: int,
    device: str,
    compile: bool = False,
    peak: float | None = None,
    fp32_ref: np.ndarray | None = None,
    prefix_cache: str = "off",
    bar: tuple[float, float] = (0.999, 0.98),
) -> dict:
    from sentence_transformers.cross_encoder import CrossEncoder

    st = CrossEncoder(
        str(model_dir),
        activation_fn=torch.nn.Identity(),
        max_length=max_length,
        device=device,
        model_kwargs={"dtype": st_dtype},
    )
    ce = load_teacher(
        str(model_dir), max_length=max_length, dtype=engine_dtype, device=device, compile=compile
    )
    int8_facts = None
    if ce.dtype == "int8":
        cal = real_pairs(INT8_CALIBRATION_PAIRS, seed=1)
        cq = [q for q, _ in cal]
        ce, int8_facts = int8_teacher(
            ce,
            pd.DataFrame({"qid": cq}),
            cq,
            [d for _, d in cal],
            model_dir.with_name(f"{model_dir.name}-int8"),  # its graphs, in the bench's own temp folder
            min_spearman=bar[0],
            min_kendall=bar[1],
            batch_tokens=batch_tokens,
        )
    engine = ScoringEngine(ce, batch_tokens=batch_tokens, prefix_cache=prefix_cache)
    qs, ds = [p[0] for p in pairs], [p[1] for p in pairs]
    st.predict(pairs[:64], batch_size=32, show_progress_bar=False)  # warm-up
    engine.score(qs, ds) if compile else engine.score(qs[:64], ds[:64])  # compile: every shape once
    t_st, ref = best_of(
        lambda: np.asarray(st.predict(pairs, batch_size=32, show_progress_bar=False)), repeats
    )
    engine.stats = type(engine.stats)()
    t_en, got = best_of(lambda: np.asarray(engine.score(qs, ds)), repeats)
    res = {
        "setting": name,
        "device": str(ce.device),
        "threads": torch.get_num_threads(),
        "pairs": len(pairs),
        "engine_dtype": ce.dtype,
        "st_dtype": str(st_dtype).replace("torch.", ""),
        "engine_pairs_per_s": round(len(pairs) / t_en, 1),
        "reference": "CrossEncoder.predict",
        "reference_pairs_per_s": round(len(pairs) / t_st, 1),
        "ratio": round(t_st / t_en, 3),
        "max_abs_diff": float(np.abs(got - ref).max()),
        "spearman": round(float(spearmanr(got, ref)[0]), 6),
        "padding_overhead": round(engine.stats.padding_overhead, 4),
        "batch_tokens": batch_tokens,
        "prefix_cache": prefix_cache,
    }
    if int8_facts is not None:
        res["int8"] = int8_facts | {"bar": list(bar)}
    if (
        engine.stats.prefix_tokens_saved
    ):  # the share of all pairs' tokens that shared prefixes did not recompute
        per_pass = engine.stats.real_tokens + engine.stats.prefix_tokens_saved
        res["prefix_share"] = round(engine.stats.prefix_tokens_saved / per_pass, 4)
    if fp32_ref is not None:  # the ranking against CrossEncoder in fp32, whatever the precision compared
        res["spearman_vs_fp32"] = round(float(spearmanr(got, fp32_ref)[0]), 6)
        res["kendall_vs_fp32"] = round(float(kendalltau(got, fp32_ref)[0]), 6)
        res["score_std"] = round(float(np.std(fp32_ref)), 4)
    if ce.device.type == "cuda":
        name = torch.cuda.get_device_name()
        ids, _ = engine._tokenize(qs, ds)
        tflops = model_tflop(model_dir, np.array([len(x) for x in ids])) / t_en
        res["gpu"] = name
        res["engine_tflops"] = round(tflops, 2)
        sheet = _datasheet_peak(name)
        if sheet:
            res["fraction_of_datasheet_bf16_peak"] = round(tflops / sheet, 4)
        if peak:
            res["measured_bf16_matmul_tflops"] = round(peak, 1)
            res["fraction_of_measured_bf16_peak"] = round(tflops / peak, 4)
    return res


def fp32_reference(model_dir: Path, pairs: list, max_length: int, device: str) -> np.ndarray:
    """CrossEncoder.predict in fp32: what every precision's ranking is compared with."""
    from sentence_transformers.cross_encoder import CrossEncoder

    st = CrossEncoder(str(model_dir), activation_fn=torch.nn.Identity(), max_length=max_length, device=device)
    return np.asarray(st.predict(pairs, batch_size=32, show_progress_bar=False))


def teacher_setting(
    s: str,
    model_dir: Path,
    pairs: list,
    args: Any,
    device: str,
    peak: float | None,
    fp32_ref: np.ndarray | None = None,
) -> dict | None:
    """One teacher setting of `make bench` (None where it does not apply on this device)."""
    kw = {
        "fp32": ("fp32", torch.float32),
        "bf16": ("bf16", torch.bfloat16),
        "int8": ("int8", torch.float32),
        "default": ("auto", torch.float32),
        "fp16": ("fp16", torch.float32),
    }[s.removesuffix("+compile")]
    if (s == "int8" and device != "cpu") or (s == "fp16" and device == "cpu"):
        return None
    return bench_setting(
        s,
        model_dir,
        pairs,
        engine_dtype=kw[0],
        st_dtype=kw[1],
        max_length=args.max_length,
        batch_tokens=args.batch_tokens,
        repeats=args.repeats,
        device=device,
        compile=s.endswith("+compile"),
        peak=peak,
        fp32_ref=fp32_ref,
        bar=(args.min_spearman, args.min_kendall),
    )


def grouped_pairs(n: int, per_query: int = 8) -> list[tuple[str, str]]:
    """Real pairs as a scoring job meets them, a query's candidates together: MS MARCO sample queries with their
    passages, then Vaswani topics with judged and random abstracts; `per_query` each, n in all."""
    out: list[tuple[str, str]] = []
    rows = read_flagembedding(SHARED / "flagembedding_msmarco_sample" / "reranker_examples.jsonl")
    v = SHARED / "vaswani_npl"
    docs = [d["text"] for d in parse_trec_docs((v / "doc-text.trec").read_text())]
    topics = [t["text"] for t in parse_trec_topics((v / "query-text.trec").read_text())]
    rng = np.random.default_rng(0)
    groups = [[(r["query"], p) for p in (r["pos"] + r["neg"])[:per_query]] for r in rows]
    groups += [[(t, docs[i]) for i in rng.choice(len(docs), per_query, replace=False)] for t in topics]
    order = [g for pair in zip(groups[: len(rows)], groups[len(rows) :], strict=False) for g in pair]
    for g in order:
        out += g
        if len(out) >= n:
            break
    return out[:n]


def llm_setting(s: str, pairs: list, args: Any, device: str, peak: float | None) -> list[dict] | None:
    """`llm`, `llm-bf16`, `llm-fp16`: the Qwen3-Reranker-0.6B-shape model, both sides in one precision, on real
    pairs grouped by query (as a scoring job has them), the engine without and with shared prefixes."""
    import tempfile

    dtype = s.split("-")[1] if "-" in s else "fp32"
    if dtype == "fp16" and device == "cpu":
        return None
    few = grouped_pairs(args.llm_pairs, args.llm_per_query)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_llm_reranker(Path(tmp) / "qwen3_reranker_shape", pairs)  # tokenizer: every text
        for prefix in ("off", "on"):
            line = bench_setting(
                s,
                model_dir,
                few,
                engine_dtype=dtype,
                st_dtype={"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype],
                max_length=args.max_length,
                batch_tokens=args.batch_tokens,
                repeats=args.repeats,
                device=device,
                peak=peak,
                prefix_cache=prefix,
            )
            out.append(
                line
                | {
                    "model": "Qwen3-Reranker-0.6B shape (random weights)",
                    "pairs_per_query": args.llm_per_query,
                }
            )
    return out


def job_setting(data: str, k: int, model_dir: Path, tmp: Path, repeats: int) -> dict:
    """The whole `make teacher-score` job (reading candidates, shards, tokenising, the engine, Parquet parts,
    manifest) on `data`'s BM25 top `k`, against `CrossEncoder.predict` (fp32, batch 32) on the same pairs and
    texts. Both times exclude loading the model (the job's own `seconds`); the job runs `repeats` times afresh
    and its best is kept."""
    import shutil

    from scipy.stats import kendalltau, spearmanr
    from sentence_transformers.cross_encoder import CrossEncoder

    from distill.data.prepare import load_dataset
    from distill.retrieval.candidates import run as run_candidates
    from distill.schema import compose_config
    from distill.teacher.scoring import run as run_score
    from distill.teacher.scoring import texts_for
    from distill.teacher.soft_labels import read_manifest, read_soft_labels

    ws = tmp / f"job-{data}"
    overrides = [
        f"data={data}",
        f"paths.workspace={ws}",
        f"paths.data_root={tmp / 'data'}",
        f"retrieval.k={k}",
        f"teacher.model={model_dir}",
        "logger=none",
    ]
    cfg = compose_config(overrides)
    run_candidates(cfg)
    best: dict | None = None
    for _ in range(repeats):
        shutil.rmtree(ws / "soft_labels", ignore_errors=True)
        s = run_score(cfg)
        best = s if best is None or s["seconds"] < best["seconds"] else best
    assert best is not None
    labels = read_soft_labels(ws / "soft_labels")
    qs, ds_ = texts_for(load_dataset(cfg), labels, "soft labels")
    pairs = list(zip(qs, ds_, strict=True))
    st = CrossEncoder(str(model_dir), activation_fn=torch.nn.Identity(), device="cpu")
    st.predict(pairs[:64], batch_size=32, show_progress_bar=False)
    t_st, ref = best_of(
        lambda: np.asarray(st.predict(pairs, batch_size=32, show_progress_bar=False)), repeats
    )
    got = labels.score.to_numpy()
    return {
        "setting": f"job:{data}",
        "pairs": len(pairs),
        "mean_doc_words": round(float(np.mean([len(d.split()) for d in ds_])), 1),
        "engine_dtype": (read_manifest(ws / "soft_labels") or {}).get("identity", {}).get("dtype"),
        "job_seconds": best["seconds"],
        "engine_pairs_per_s": round(len(pairs) / best["seconds"], 1),
        "reference": "CrossEncoder.predict fp32",
        "reference_pairs_per_s": round(len(pairs) / t_st, 1),
        "ratio": round(t_st / best["seconds"], 3),
        "spearman_vs_fp32": round(float(spearmanr(got, ref)[0]), 6),
        "kendall_vs_fp32": round(float(kendalltau(got, ref)[0]), 6),
        "threads": torch.get_num_threads(),
    }
