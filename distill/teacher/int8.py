"""`teacher.dtype=int8`: static int8 through OpenVINO, calibrated on the job's own pairs, for CPUs where bf16 is
not native (there `teacher.dtype=auto` tries it first).

The encoder cross-encoder's forward (tokens in, `scores` out) is traced to ONNX on the engine's own batches of
the calibration pairs, checked against the model on them, converted to OpenVINO and quantised by NNCF (weights
and activations of the matrix products with constant weights; the attention's activation products, the
normalisations and softmax stay f32), with the batches as NNCF's calibration data. One int8 scale per activation
serves inputs with outliers badly, so the products whose inputs have the widest range come first and the first
0, 1/8, 1/4, 1/2 or 3/4 of them stay f32: the fewest for which the int8 graph ranks the calibration pairs as the
fp32 model does (Spearman >= `min_spearman`, mean per-query Kendall tau >= `min_kendall`: the same bar as
`distill/teacher/calibration.py`). The graph then stands in for the CrossEncoder's forward, run by OpenVINO with
f32 elsewhere (so the ranking does not depend on the CPU's bf16), and the engine batches, overlaps and shards
around it as for PyTorch.

Written here because neither library judges a quantised graph by the ranking of the job's own pairs: NNCF's
accuracy-controlled quantisation needs a validation function per model, and the teacher's is this one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.errors import ConfigError, DataError, DistillError
from distill.graphs import runtime as graph
from distill.graphs.forward import GRAPH_CHECK, GraphForward, Recorder, check, trace
from distill.teacher.engine import ScoringEngine
from distill.teacher.model import INT8_MODULES, TeacherModel, int8_refused

log = logging.getLogger(__name__)

# the largest share of the weight products kept f32 in the search: beyond it int8 would not pay
MAX_FP32_SHARE = 0.75


@dataclass
class Int8Graph:
    """A calibrated int8 teacher's graph: its runner and the map from its outputs to the forward's keys."""

    runner: Any
    outputs: dict[str, str]


def attach(teacher: TeacherModel, g: Int8Graph) -> TeacherModel:
    """The teacher with `g` in place of its CrossEncoder's forward."""
    GraphForward(g.runner, g.outputs)(teacher.ce)
    return replace(teacher, dtype="int8", graph=g)


def detach(teacher: TeacherModel) -> TeacherModel:
    """The teacher with its own (fp32) forward back."""
    if "forward" in vars(teacher.ce):
        del teacher.ce.forward
    return replace(teacher, dtype="fp32", graph=None)


def calibrate(
    teacher: TeacherModel,
    queries: list[str],
    docs: list[str],
    *,
    agree: Callable[[np.ndarray, np.ndarray], tuple[dict[str, Any], bool]],
    workdir: Path,
    batch_tokens: int = 16384,
) -> tuple[TeacherModel, dict[str, Any]]:
    """The int8 teacher calibrated on (`queries`, `docs`) and the facts: the fp32 and int8 seconds on these
    pairs, the weight products kept f32, and `agree(fp32 scores, int8 scores)` (its figures and whether they
    pass) of the graph kept. `teacher` is the model loaded for int8 (fp32 weights, not yet quantised); where no
    layout passes, the last one tried is returned with `passed` false (the caller falls back or warns)."""
    for m in INT8_MODULES:
        graph._need(m, purpose="teacher.dtype=int8")
    if teacher.family != "encoder":
        raise int8_refused(teacher.name)
    if len(queries) == 0:
        raise DataError("teacher.dtype=int8 calibrates on the job's own pairs, and there are none to score")
    fp32 = detach(teacher)
    threads = torch.get_num_threads()
    rec = Recorder()
    rec(fp32.ce)
    engine = ScoringEngine(fp32, batch_tokens=batch_tokens)
    try:
        ref = engine.score(queries, docs)
    finally:
        rec.release()
    fp32_seconds = engine.stats.seconds
    where = f"teacher.dtype=int8 ({teacher.name})"
    try:
        onnx_path, outputs = trace(fp32.ce, rec.calls, workdir / "fp32.onnx", where)
    except DistillError:
        raise
    except Exception as e:  # the tracer's own errors: an architecture torch.onnx cannot trace
        raise ConfigError(
            f"{where}: its forward cannot be traced to one graph ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); use teacher.dtype=bf16 or fp32"
        ) from e
    # the traced graph is the model (ONNX Runtime: OpenVINO's own f32 differs from PyTorch by ~1e-3 here)
    check(graph.OnnxRunner(onnx_path, threads), outputs, rec.calls, where, GRAPH_CHECK)
    ir = graph.to_openvino(onnx_path, workdir / "fp32-ir")

    def judge(runner: graph.Runner) -> tuple[dict[str, Any], bool]:
        candidate = attach(fp32, Int8Graph(runner, outputs))
        try:
            e = ScoringEngine(candidate, batch_tokens=batch_tokens)
            got = e.score(queries, docs)
        finally:
            detach(candidate)
        figures, ok = agree(ref, got)
        return {**figures, "seconds": round(e.stats.seconds, 3)}, ok

    samples = [{k: v.numpy() for k, v in c.inputs.items()} for c in rec.calls]
    t0 = time.perf_counter()
    path, found = graph.quantize_openvino(
        ir,
        workdir / "int8-ir",
        samples,
        onnx_path,
        judge=judge,
        threads=threads,
        max_fp32_share=MAX_FP32_SHARE,
    )
    runner = graph.OpenVinoRunner(path, threads, precision="f32")
    facts = {
        "backend": "openvino",
        "calibration_batches": len(samples),
        "weight_products": found["products"],
        "kept_f32": found["fp32_products"],
        "passed": bool(found["passed"]),
        "agreement": found["agreement"],
        "fp32_seconds": round(fp32_seconds, 3),
        "int8_seconds": found["agreement"].get("seconds"),
        "search_seconds": round(time.perf_counter() - t0, 1),
        "tried": [{"kept_f32": s["fp32_products"], **s["agreement"]} for s in found["tried"]],
    }
    return attach(fp32, Int8Graph(runner, outputs)), facts


__all__ = ["Int8Graph", "attach", "calibrate", "detach"]
