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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.errors import ConfigError

log = logging.getLogger(__name__)


def _need(module: str, extra: str = "export") -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"exporting needs {module}: pip install -e '.[{extra}]' (or `make export`, which installs it)"
        ) from e


class _Forward(torch.nn.Module):
    """The model's forward with named tensors in and one tensor out (what torch.onnx traces)."""

    def __init__(self, model: Any, names: list[str], output: str):
        super().__init__()
        self.model, self.names, self.output = model, names, output

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        out = self.model(dict(zip(self.names, tensors, strict=True)))
        return out[self.output]


def model_inputs(model: Any, texts: list[Any], **kwargs: Any) -> dict[str, torch.Tensor]:
    """The tensors the model's own `preprocess` makes of `texts` (pairs for a CrossEncoder)."""
    feats = model.preprocess(texts, **kwargs)
    return {k: v for k, v in feats.items() if torch.is_tensor(v)}


def to_onnx(model: Any, example: dict[str, torch.Tensor], output: str, path: Path) -> Path:
    """Export `model`'s forward on inputs shaped like `example` (every dimension dynamic) to `path`."""
    _need("onnx")
    names = list(example)
    wrapper = _Forward(model.eval().cpu(), names, output)
    dynamic = {n: {i: f"{n}_{i}" for i in range(t.dim())} for n, t in example.items()}
    dynamic[output] = {0: "rows"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        torch.onnx.export(
            wrapper,
            tuple(example[n] for n in names),
            str(path),
            input_names=names,
            output_names=[output],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
    return path


class OnnxRunner:
    """An ONNX graph on ONNX Runtime's CPU provider."""

    def __init__(self, path: Path, threads: int | None = None):
        ort = _need("onnxruntime")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, feats: dict[str, Any]) -> np.ndarray:
        return self.session.run(None, {n: _np(feats[n]) for n in self.inputs})[0]


class OpenVinoRunner:
    """An ONNX or OpenVINO IR graph compiled by OpenVINO for the CPU (its default precision hint: bf16 on CPUs
    with native bf16, fp32 elsewhere)."""

    def __init__(self, path: Path, threads: int | None = None):
        ov = _need("openvino")
        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": int(threads)} if threads else {}
        self.compiled = core.compile_model(str(path), "CPU", config)
        self.inputs = [p.get_any_name() for p in self.compiled.inputs]
        self.request = self.compiled.create_infer_request()

    def __call__(self, feats: dict[str, Any]) -> np.ndarray:
        res = self.request.infer({n: _np(feats[n]) for n in self.inputs})
        return np.asarray(next(iter(res.values())))


def _np(x: Any) -> np.ndarray:
    return x.cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def to_openvino(onnx_path: Path, out: Path) -> Path:
    """The ONNX graph as OpenVINO IR (`model.xml` + `model.bin`) in `out`."""
    ov = _need("openvino")
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.convert_model(str(onnx_path)), str(out / "model.xml"))
    return out / "model.xml"


def quantize_onnx(onnx_path: Path, out_path: Path, samples: Iterable[dict[str, Any]]) -> Path:
    """Static int8 (weights and activations) with ONNX Runtime's quantiser, calibrated on `samples` (the caller's
    own inputs): QDQ format, per-channel weights."""
    _need("onnxruntime")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{k: _np(v) for k, v in s.items()} for s in samples])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    quantize_static(
        str(onnx_path),
        str(out_path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )
    return out_path


def quantize_openvino(ir_path: Path, out: Path, samples: Iterable[dict[str, Any]]) -> Path:
    """Static int8 with OpenVINO's NNCF (the transformer preset), calibrated on `samples`."""
    ov = _need("openvino")
    nncf = _need("nncf")
    model = ov.Core().read_model(str(ir_path))
    names = [p.get_any_name() for p in model.inputs]
    data = [{n: _np(s[n]) for n in names} for s in samples]
    quantized = nncf.quantize(
        model, nncf.Dataset(data), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(data)
    )
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out / "model.xml"))
    return out / "model.xml"


__all__ = [
    "OnnxRunner",
    "OpenVinoRunner",
    "model_inputs",
    "quantize_onnx",
    "quantize_openvino",
    "to_onnx",
    "to_openvino",
]
