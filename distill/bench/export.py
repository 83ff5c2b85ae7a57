"""`make bench ARGS="--settings export"`: the graphs `make export` writes against PyTorch, on REAL weights and
real pairs, one run: the MiniLM-L6 cross-encoder with real weights (the bench's teacher shape; also the anchors
a user would pick instead of the scoring engine: ONNX Runtime and OpenVINO) and the real all-MiniLM-L6-v2
bi-encoder.

Pairs: query-grouped real pairs (`grouped_pairs`: MS MARCO sample and Vaswani); every fourth query's pairs
calibrate int8 and record the calls the graph is traced on, the other queries' pairs are measured. Each variant
runs through the model's own `predict` / `encode` with its forward replaced by the graph (as a served export
does), so tokenising is the same on every line. Per line: pairs (or texts) per second, the ratio to PyTorch fp32
on the same inputs, Spearman and mean per-query Kendall tau of the scores against PyTorch fp32; and the scoring
engine (`teacher.dtype=auto`, and its dynamic int8) on the same pairs. OpenVINO runs at its default precision
(bf16 where the CPU has it) and, forced, in f32 (`openvino f32`, `openvino-int8 f32`): the path of a CPU without
native bf16, where int8 should pay.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from distill.bench.teacher import SHARED, build_real_bench_model, grouped_pairs
from distill.graphs import runtime as graph
from distill.graphs.forward import GraphForward, Recorder, trace
from distill.ir.metrics import kendall_per_query
from distill.ir.timing import best_of

PER_QUERY = 8


def variants(model: Any, calls: list, tmp: Path) -> Any:
    """(name, runner, graph outputs, facts) for ONNX fp32 / int8 and OpenVINO (its default precision) / int8,
    traced and calibrated on the recorded `calls`; each built when its turn comes and dropped after it (a
    runtime's idle thread pool must not share the cores with the next one's measurement)."""
    path, outputs = trace(model, calls, tmp / "fp32.onnx", "bench")
    samples = [c.inputs for c in calls]
    yield "onnx", graph.OnnxRunner(path), outputs, {}
    search = graph.quantize_onnx(path, tmp / "int8.onnx", samples)
    yield (
        "onnx-int8",
        graph.OnnxRunner(tmp / "int8.onnx"),
        outputs,
        {"fp32_products": f"{search['fp32_products']}/{search['products']}"},
    )
    ir = graph.to_openvino(path, tmp / "ov")
    ov = graph.OpenVinoRunner(ir)
    yield "openvino", ov, outputs, {"precision": ov.precision}
    del ov
    int8, found = graph.quantize_openvino(ir, tmp / "ov-int8", samples, path)
    yield (
        "openvino-int8",
        graph.OpenVinoRunner(int8),
        outputs,
        {"fp32_products": f"{found['fp32_products']}/{found['products']}"},
    )
    # bf16 off: the path of a CPU without native bf16, where int8 is meant to pay (its int8 products still use
    # this CPU's int8 instructions)
    yield "openvino f32", graph.OpenVinoRunner(ir, precision="f32"), outputs, {"precision": "f32"}
    yield "openvino-int8 f32", graph.OpenVinoRunner(int8, precision="f32"), outputs, {"precision": "f32"}


def compare(
    name: str, fn: Any, ref: np.ndarray, ref_s: float, rows: pd.DataFrame, repeats: int, n: int
) -> dict:
    seconds, got = best_of(fn, repeats)
    got = np.asarray(got, np.float64)
    return {
        "variant": name,
        "per_s": round(n / seconds, 1),
        "vs_torch_fp32": round(ref_s / seconds, 3),
        "spearman": round(float(spearmanr(got, ref)[0]), 6),
        "kendall_per_query": round(kendall_per_query(rows, got, ref) or 0.0, 4),
    }


def with_graph(model: Any, runner: Any, outputs: dict[str, str], fn: Any) -> Any:
    GraphForward(runner, outputs)(model)
    try:
        return fn()
    finally:
        del model.forward


def graph_lines(
    model: Any,
    calibrate: Any,
    fn: Any,
    tmp: Path,
    ref: np.ndarray,
    ref_s: float,
    rows: pd.DataFrame,
    repeats: int,
    n: int,
) -> list[dict]:
    """Each graph variant of `model` (traced and calibrated on the forward calls `calibrate` makes) run through
    `fn` with the graph in place of its forward, against PyTorch fp32's `ref`."""
    rec = Recorder()
    rec(model)
    calibrate()
    rec.release()
    return [
        compare(name, lambda r=run, o=outputs: with_graph(model, r, o, fn), ref, ref_s, rows, repeats, n)
        | facts
        for name, run, outputs, facts in variants(model, rec.calls, tmp)
    ]


def cross_encoder_lines(pairs: list, tmp: Path, repeats: int) -> list[dict]:
    from sentence_transformers import CrossEncoder

    from distill.teacher.calibration import int8_teacher
    from distill.teacher.engine import ScoringEngine
    from distill.teacher.model import load_teacher

    groups = [pairs[i : i + PER_QUERY] for i in range(0, len(pairs), PER_QUERY)]
    calib = [p for g in groups[::4] for p in g]
    test_groups = [g for i, g in enumerate(groups) if i % 4]
    test = [p for g in test_groups for p in g]
    rows = pd.DataFrame({"qid": np.repeat(np.arange(len(test_groups)), [len(g) for g in test_groups])})
    model_dir = build_real_bench_model(tmp / "ce")
    ce = CrossEncoder(str(model_dir), activation_fn=torch.nn.Identity(), max_length=512, device="cpu")

    def predict(m: Any = ce) -> np.ndarray:
        return np.asarray(m.predict(test, batch_size=32, show_progress_bar=False))

    ref_s, ref = best_of(predict, repeats)
    lines = [{"variant": "torch-fp32", "per_s": round(len(test) / ref_s, 1), "vs_torch_fp32": 1.0}]
    ce16 = CrossEncoder(
        str(model_dir),
        activation_fn=torch.nn.Identity(),
        max_length=512,
        device="cpu",
        model_kwargs={"torch_dtype": torch.bfloat16},
    )
    lines.append(compare("torch-bf16", lambda: predict(ce16), ref, ref_s, rows, repeats, len(test)))
    engine = ScoringEngine(load_teacher(str(model_dir), dtype="auto", device="cpu"), batch_tokens=4096)
    qs, ds = [q for q, _ in test], [d for _, d in test]
    lines.append(
        compare(
            f"engine-auto ({engine.teacher.dtype})",
            lambda: engine.score(qs, ds),
            ref,
            ref_s,
            rows,
            repeats,
            len(test),
        )
    )
    # the engine's static int8 (distill/teacher/int8.py), calibrated on the calibration pairs at the job's default
    # bar and at one the int8 goal names (Spearman 0.995)
    cq = [q for q, _ in calib]
    sizes = [len(g) for g in groups[::4]]
    calib_rows = pd.DataFrame({"qid": np.repeat(np.arange(len(sizes)), sizes)})
    for bar in ((0.999, 0.98), (0.995, 0.9)):
        teacher, found = int8_teacher(
            load_teacher(str(model_dir), dtype="int8", device="cpu"),
            calib_rows,
            cq,
            [d for _, d in calib],
            tmp / f"engine-int8-{bar[0]}",
            min_spearman=bar[0],
            min_kendall=bar[1],
            batch_tokens=4096,
        )
        int8 = ScoringEngine(teacher, batch_tokens=4096)
        lines.append(
            compare(
                f"engine-int8 (bar {bar[0]})",
                lambda e=int8: e.score(qs, ds),
                ref,
                ref_s,
                rows,
                repeats,
                len(test),
            )
            | {"fp32_products": f"{found['kept_f32']}/{found['weight_products']}"}
        )
    lines += graph_lines(
        ce,
        lambda: ce.predict(calib, batch_size=32, show_progress_bar=False),
        predict,
        tmp / "ce-graphs",
        ref,
        ref_s,
        rows,
        repeats,
        len(test),
    )
    return [
        {"model": "MiniLM-L6 cross-encoder, real weights", "unit": "pairs", "pairs": len(test), **x}
        for x in lines
    ]


def bi_encoder_lines(pairs: list, tmp: Path, repeats: int) -> list[dict]:
    """The real bi-encoder encoding the measured pairs' passages (what an index build costs); the ranking is
    each query's dot product with its passages."""
    from sentence_transformers import SentenceTransformer

    groups = [pairs[i : i + PER_QUERY] for i in range(0, len(pairs), PER_QUERY)]
    calib = [t for g in groups[::4] for t in (g[0][0], *(d for _, d in g))]
    test_groups = [g for i, g in enumerate(groups) if i % 4]
    queries = [g[0][0] for g in test_groups]
    docs = [d for g in test_groups for _, d in g]
    q_of = np.repeat(np.arange(len(test_groups)), [len(g) for g in test_groups])
    rows = pd.DataFrame({"qid": q_of})
    model = SentenceTransformer(str(SHARED / "all_minilm_l6_v2"), device="cpu")
    q = model.encode(queries, convert_to_numpy=True)

    def encode(m: Any = model) -> np.ndarray:
        d = m.encode(docs, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
        return np.einsum("ij,ij->i", q[q_of], d)

    ref_s, ref = best_of(encode, repeats)
    lines = [{"variant": "torch-fp32", "per_s": round(len(docs) / ref_s, 1), "vs_torch_fp32": 1.0}]
    lines += graph_lines(
        model,
        lambda: model.encode(calib, batch_size=32, show_progress_bar=False),
        encode,
        tmp / "bi-graphs",
        ref,
        ref_s,
        rows,
        repeats,
        len(docs),
    )
    return [
        {"model": "all-MiniLM-L6-v2 bi-encoder, real weights", "unit": "passages", "passages": len(docs), **x}
        for x in lines
    ]


def export_bench(n_pairs: int, tmp: Path, repeats: int) -> list[dict]:
    pairs = grouped_pairs(n_pairs, PER_QUERY)
    out = []
    for lines in (cross_encoder_lines(pairs, tmp, repeats), bi_encoder_lines(pairs, tmp, repeats)):
        out += [
            {"setting": "export", "device": "cpu", "threads": torch.get_num_threads(), **x} for x in lines
        ]
    return out


__all__ = ["export_bench"]
