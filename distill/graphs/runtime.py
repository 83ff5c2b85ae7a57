"""A sentence-transformers model (SentenceTransformer, CrossEncoder, MultiVectorEncoder, SparseEncoder) as an ONNX
graph, and runtimes that run it: ONNX Runtime or OpenVINO, optionally with static int8 weights and activations
calibrated on the caller's own inputs.

The graph is the model's own forward over the tensors its `preprocess` makes (input ids, attention mask, token
type ids, the offsets of a StaticEmbedding, ...), every dimension dynamic, with one output: the tensor the model's
scorer reads (`sentence_embedding`, `token_embeddings`, `scores`). Tokenising stays the model's own, in Python.

Written by hand because sentence-transformers' `export_*` functions and backends go through optimum, whose
releases pin transformers below the version sentence-transformers 6 needs: the graph is exported with
`torch.onnx.export`, quantised with ONNX Runtime's static quantiser or OpenVINO's NNCF, and run directly.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.errors import ConfigError

log = logging.getLogger(__name__)


def _need(module: str, extra: str = "export", purpose: str = "exporting") -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"{purpose} needs {module}: pip install -e '.[{extra}]' (or `make export`, which installs it)"
        ) from e


class _Forward(torch.nn.Module):
    """The model's forward with named tensors in and the named outputs out (what torch.onnx traces)."""

    def __init__(self, model: Any, names: list[str], outputs: list[str], kwargs: dict[str, Any]):
        super().__init__()
        self.model, self.names, self.outputs, self.kwargs = model, names, outputs, kwargs

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(dict(zip(self.names, tensors, strict=True)), **self.kwargs)
        return tuple(out[k] for k in self.outputs)


def output_name(key: str, inputs: Iterable[str]) -> str:
    """The graph's name of a forward output `key` (an input the forward rewrites, such as a mask, gets a
    suffix: a graph's input and output names must differ)."""
    return f"{key}.out" if key in set(inputs) else key


def to_onnx(
    model: Any,
    example: dict[str, torch.Tensor],
    outputs: list[str],
    path: Path,
    kwargs: dict[str, Any] | None = None,
) -> Path:
    """Export `model`'s forward (called with `kwargs`) on inputs shaped like `example` (every dimension
    dynamic) to `path`, with the forward's outputs `outputs` (named by `output_name`)."""
    _need("onnx")
    names = list(example)
    # the wrapper in eval mode too: torch.onnx.export puts the module it exports back into the mode it found it in,
    # recursively, and a new module is in training mode (the model would come back with its dropout on)
    wrapper = _Forward(model.eval().cpu(), names, outputs, dict(kwargs or {})).eval()
    out_names = [output_name(k, names) for k in outputs]
    dynamic: dict[str, dict[int, str]] = {
        n: {i: f"{n}_{i}" for i in range(t.dim())} for n, t in example.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        probe = wrapper(*(example[n] for n in names))
    for n, t in zip(out_names, probe, strict=True):
        dynamic[n] = {i: f"{n}_{i}" for i in range(t.dim())}
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            tuple(example[n] for n in names),
            str(path),
            input_names=names,
            output_names=out_names,
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
    return path


class OnnxRunner:
    """An ONNX graph on ONNX Runtime's CPU provider: `runner(features) -> {output name: array}`."""

    def __init__(self, path: Path, threads: int = 0, precision: str = "auto"):
        ort = _need("onnxruntime")
        opts = ort.SessionOptions()
        # PyTorch's thread count unless told (ONNX Runtime's own default is the physical cores, which on a
        # machine with two threads per core leaves half of what PyTorch uses idle)
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only (its graph-rewrite notes are not the user's concern)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.precision = "as stored"  # the graph's own types (fp32, or int8 where quantised)

    def __call__(self, feats: dict[str, Any]) -> dict[str, np.ndarray]:
        got = self.session.run(None, {n: _np(feats[n]) for n in self.inputs})
        return dict(zip(self.outputs, got, strict=True))


class OpenVinoRunner:
    """An ONNX or OpenVINO IR graph compiled by OpenVINO for the CPU, with OpenVINO's default precision hint
    (`auto`: bf16 on CPUs with native bf16, f32 elsewhere) or the one given; `precision` says which it runs."""

    def __init__(self, path: Path, threads: int = 0, precision: str = "auto"):
        ov = _need("openvino")
        core = ov.Core()
        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": int(threads)} if threads else {}
        if precision != "auto":
            config["INFERENCE_PRECISION_HINT"] = precision
        self.compiled = core.compile_model(str(path), "CPU", config)
        self.inputs = [p.get_any_name() for p in self.compiled.inputs]
        self.outputs = [p.get_any_name() for p in self.compiled.outputs]
        self.request = self.compiled.create_infer_request()
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()

    def __call__(self, feats: dict[str, Any]) -> dict[str, np.ndarray]:
        res = self.request.infer({n: _np(feats[n]) for n in self.inputs})
        return {n: np.asarray(res[self.compiled.output(n)]) for n in self.outputs}


def _np(x: Any) -> np.ndarray:
    return x.cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def to_openvino(onnx_path: Path, out: Path) -> Path:
    """The ONNX graph as OpenVINO IR (`model.xml` + `model.bin`) in `out`."""
    ov = _need("openvino")
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.convert_model(str(onnx_path)), str(out / "model.xml"))
    return out / "model.xml"


# what an int8 graph must keep of the fp32 graph's outputs on the calibration calls (`agreement`): each row's
# vectors, and the order of the scores within each call (a call holds one or a few queries' candidates; an export
# is held to a per-query Kendall tau of 0.95 on the test queries, so calibration asks for a margin above it: on the
# sample world's cross-encoder 0.97 here gave 0.9445 on the test queries, 0.98 gave 0.971)
MIN_COSINE, MIN_KENDALL = 0.995, 0.98


def agreement(
    reference: list[dict[str, np.ndarray]], got: list[dict[str, np.ndarray]]
) -> dict[str, float | None]:
    """How closely one graph's outputs follow another's on the same calls. `cosine`: the smallest cosine
    similarity between a row's vectors (an embedding, a row of token vectors); `kendall`: for one number per row
    (a score), the mean over calls of the Kendall tau between the two graphs' scores of the call's rows (rank
    order is what a ranker keeps; a correlation over a call stays high while close candidates swap). None where
    the outputs have no such part."""
    from scipy.stats import kendalltau

    cosine: float | None = None
    taus: list[float] = []
    for ref, out in zip(reference, got, strict=True):
        for key, a in ref.items():
            if a.dtype.kind != "f" or a.size == 0:
                continue
            a = a.reshape(len(a), -1).astype(np.float64)
            b = np.asarray(out[key], np.float64).reshape(a.shape)
            if a.shape[1] == 1:
                if len(a) > 1 and np.ptp(a) > 0:
                    tau = kendalltau(a[:, 0], b[:, 0])[0]
                    taus.append(0.0 if np.isnan(tau) else float(tau))
                continue
            norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
            live = norms > 0
            if live.any():
                worst = float(np.min(np.sum(a * b, axis=1)[live] / norms[live]))
                cosine = worst if cosine is None else min(cosine, worst)
    return {"cosine": cosine, "kendall": float(np.mean(taus)) if taus else None}


def agrees(
    found: dict[str, float | None], min_cosine: float = MIN_COSINE, min_kendall: float = MIN_KENDALL
) -> bool:
    cos, tau = found["cosine"], found["kendall"]
    return (cos is None or cos >= min_cosine) and (tau is None or tau >= min_kendall)


def weight_products(path: Path) -> list[tuple[str, str]]:
    """(node, its activation input) of each matrix product with constant weights, in graph order."""
    onnx = _need("onnx")
    model = onnx.load(str(path), load_external_data=False)
    consts = {t.name for t in model.graph.initializer}
    return [
        (n.name, n.input[0])
        for n in model.graph.node
        if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in consts
    ]


def outlier_order(path: Path, samples: list[dict[str, np.ndarray]]) -> list[str]:
    """The weight products, those whose input activations have the widest range against their mean magnitude
    (outliers, which one int8 scale serves worst) first, measured on `samples`."""
    onnx = _need("onnx")
    ort = _need("onnxruntime")
    products = weight_products(path)
    model = onnx.load(str(path))
    have = {o.name for o in model.graph.output}
    for _, x in products:
        if x not in have:
            model.graph.output.append(onnx.helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None))
            have.add(x)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    inputs = [i.name for i in session.get_inputs()]
    peak: dict[str, float] = {}
    total: dict[str, float] = {}
    for s in samples:
        got = dict(zip(names, session.run(None, {n: s[n] for n in inputs}), strict=True))
        for _, x in products:
            a = np.abs(got[x])
            peak[x] = max(peak.get(x, 0.0), float(a.max(initial=0.0)))
            total[x] = total.get(x, 0.0) + float(a.mean()) if a.size else total.get(x, 0.0)
    ratio = {node: peak[x] / max(total[x] / len(samples), 1e-12) for node, x in products}
    return sorted(ratio, key=lambda n: -ratio[n])


Runner = Callable[[dict[str, Any]], dict[str, np.ndarray]]
# judges a candidate int8 graph: (what was measured, whether it passes)
Judge = Callable[[Runner], tuple[dict[str, Any], bool]]


def output_judge(
    reference: list[dict[str, np.ndarray]],
    data: list[dict[str, np.ndarray]],
    min_cosine: float = MIN_COSINE,
    min_kendall: float = MIN_KENDALL,
) -> Judge:
    """A graph passes when its outputs on `data` agree with `reference` (`agreement`, `agrees`)."""

    def judge(runner: Runner) -> tuple[dict[str, Any], bool]:
        found = agreement(reference, [runner(s) for s in data])
        return found, agrees(found, min_cosine, min_kendall)

    return judge


def fewest_fp32(
    order: list[str], quantize: Callable[[int], Runner], judge: Judge, max_fp32_share: float = 1.0
) -> dict[str, Any]:
    """The search both int8 paths make: `quantize(k)` builds the int8 graph with the first k products of `order`
    kept fp32 and returns its runner; k steps through 0, 1/8, 1/4, 1/2, 3/4 and all of them (those up to
    `max_fp32_share` of them) until `judge` passes the graph. What was found (`passed` false: no step passed; the
    last one tried is the graph built), and every step tried."""
    n = len(order)
    tried: list[dict[str, Any]] = []
    passed = False
    for k in sorted(k for k in {0, n // 8, n // 4, n // 2, (3 * n) // 4, n} if k <= n * max_fp32_share):
        found, passed = judge(quantize(k))
        tried.append({"fp32_products": k, "agreement": found})
        if passed:
            break
    return {
        "products": n,
        "fp32_products": tried[-1]["fp32_products"],
        "fp32_nodes": order[: tried[-1]["fp32_products"]],
        "agreement": tried[-1]["agreement"],
        "passed": passed,
        "tried": tried,
    }


def int8_saturates() -> bool:
    """Whether ONNX Runtime's u8 x s8 products may saturate on this CPU: x86 without VNNI (AVX2 or AVX-512
    alone) sums pairs of products in 16 bits (`vpmaddubsw`), which full 8-bit weights can overflow. There ONNX
    Runtime's quantiser is asked for 7-bit weights (`reduce_range`, which its documentation recommends for
    per-channel weights on non-VNNI machines). Measured on an AVX2-only AMD EPYC: with 8-bit weights no
    product of the real all-MiniLM-L6-v2 passed the agreement bar (docs/results.md)."""
    import platform

    from distill.ir.timing import cpu_flags

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    return not {"avx_vnni", "avx512_vnni", "amx_int8"} & cpu_flags()


def quantize_onnx(
    onnx_path: Path,
    out_path: Path,
    samples: Iterable[dict[str, Any]],
    min_cosine: float = MIN_COSINE,
    min_kendall: float = MIN_KENDALL,
) -> dict[str, Any]:
    """Static int8 (weights and activations) with ONNX Runtime's quantiser, calibrated on `samples` (the caller's
    own inputs): QDQ format, matrix products with constant weights only (normalisations, softmax and the
    attention's activation products stay fp32), per-channel signed weights, unsigned activations (x86's fast
    u8 x s8 path).

    One int8 scale per activation serves inputs with outliers badly (a transformer's feed-forward output
    projections: measured on the real all-MiniLM-L6-v2, quantising all of them keeps a per-query Kendall tau of
    0.78). So the products are ordered by their inputs' outlier ratio on `samples`, and the first 0, 1/8, 1/4,
    1/2, 3/4 or all of them stay fp32, the fewest for which the int8 graph's outputs agree with the fp32 graph's
    on `samples` (`agreement`: each row's vectors within `min_cosine`, the scores' order within each call
    `min_kendall`). Written by hand: ONNX Runtime has no such search (its
    SmoothQuant needs Intel Neural Compressor)."""
    _need("onnxruntime")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    data = [{k: _np(v) for k, v in s.items()} for s in samples]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(data)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    prepared = out_path.with_name(out_path.stem + ".prepared.onnx")
    quant_pre_process(
        str(onnx_path), str(prepared), auto_merge=True
    )  # shapes inferred, graph optimised first
    order = outlier_order(prepared, data)
    reference = [OnnxRunner(prepared)(s) for s in data]
    n = len(order)

    def build(k: int) -> OnnxRunner:
        if k == n:  # every product fp32: nothing is quantised (an empty node list would mean all nodes)
            shutil.copyfile(prepared, out_path)
        else:
            # the products to quantise named one by one: with op types alone the quantiser (ONNX Runtime 1.32)
            # also quantises the attention's activation-by-activation products, `MatMulConstBOnly` or not
            quantize_static(
                str(prepared),
                str(out_path),
                Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["MatMul", "Gemm"],
                nodes_to_quantize=order[k:],
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                extra_options={"MatMulConstBOnly": True},
                reduce_range=int8_saturates(),
            )
        return OnnxRunner(out_path)

    found = fewest_fp32(order, build, output_judge(reference, data, min_cosine, min_kendall))
    found["min_agreement"] = {"cosine": min_cosine, "kendall": min_kendall}
    prepared.unlink()
    return found


def quantize_openvino(
    ir_path: Path,
    out: Path,
    samples: Iterable[dict[str, Any]],
    onnx_path: Path | None = None,
    min_cosine: float = MIN_COSINE,
    min_kendall: float = MIN_KENDALL,
    judge: Judge | None = None,
    threads: int = 0,
    max_fp32_share: float = 1.0,
) -> tuple[Path, dict[str, Any]]:
    """Static int8 with OpenVINO's NNCF (the transformer preset), calibrated on `samples`; the path of the
    int8 IR and what the search found.

    With the ONNX graph the IR was converted from (`onnx_path`), the same search as `quantize_onnx`: the weight
    products in order of their inputs' outlier ratio, the first 0, 1/8, 1/4, 1/2, 3/4 or all of them left out of
    quantisation (NNCF's ignored scope; OpenVINO keeps the ONNX node names), the fewest for which the int8 IR
    (run in f32 elsewhere, so the figure does not depend on the CPU's bf16) agrees with the f32 IR on `samples`.
    NNCF's own accuracy-controlled quantisation needs a validation metric per model; this is the same check the
    ONNX path makes, unless the caller gives its own `judge` (the teacher's: the ranking of its own pairs).
    The candidates run on `threads` threads (0: OpenVINO's default)."""
    ov = _need("openvino")
    nncf = _need("nncf")
    model = ov.Core().read_model(str(ir_path))
    names = [p.get_any_name() for p in model.inputs]
    data = [{n: _np(s[n]) for n in names} for s in samples]
    order = outlier_order(onnx_path, data) if onnx_path is not None else []
    ops = {op.get_friendly_name() for op in model.get_ops()}
    # a Gemm becomes a MatMul named <node>/WithoutBiases (its bias a separate Add)
    ov_names = [n if n in ops else f"{n}/WithoutBiases" for n in order]
    # as on the ONNX path, the attention's activation-by-activation products stay out of int8
    activations = (
        [
            op.get_friendly_name()
            for op in model.get_ops()
            if op.get_type_name() == "MatMul" and op.get_friendly_name() not in set(ov_names)
        ]
        if onnx_path is not None
        else []
    )
    own_judge = judge is None
    if judge is None:
        reference = [OpenVinoRunner(ir_path, threads, precision="f32")(s) for s in data]
        judge = output_judge(reference, data, min_cosine, min_kendall)
    n = len(order)
    out.mkdir(parents=True, exist_ok=True)

    def build(k: int) -> OpenVinoRunner:
        ignored = activations + [x for x in ov_names[:k] if x in ops]
        quantized = (
            ov.Core().read_model(
                str(ir_path)
            )  # every product fp32: nothing quantised (NNCF would still add some)
            if n and k == n
            else nncf.quantize(
                ov.Core().read_model(str(ir_path)),
                nncf.Dataset(data),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(data),
                ignored_scope=nncf.IgnoredScope(names=ignored, validate=False) if ignored else None,
            )
        )
        ov.save_model(quantized, str(out / "model.xml"))
        return OpenVinoRunner(out / "model.xml", threads, precision="f32")

    found = fewest_fp32(order, build, judge, max_fp32_share)
    if own_judge:
        found["min_agreement"] = {"cosine": min_cosine, "kendall": min_kendall}
    return out / "model.xml", found


__all__ = [
    "OnnxRunner",
    "OpenVinoRunner",
    "agreement",
    "agrees",
    "fewest_fp32",
    "output_judge",
    "outlier_order",
    "output_name",
    "quantize_onnx",
    "quantize_openvino",
    "to_onnx",
    "to_openvino",
    "weight_products",
]
