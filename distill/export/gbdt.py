"""A GBDT student's export: an ONNX graph of its trees (onnxmltools), the library's own files a search engine
imports, and `features.json`, which names each input feature, its column and how it is computed.

- LightGBM: `model.txt` (the booster's own format) and `lightgbm.json` (`Booster.dump_model()`, the JSON Vespa's
  LightGBM import reads);
- XGBoost: `model.json` (the booster's own format) and `xgboost_dump.json` (the trees of `get_dump(dump_format=
  "json")` as one JSON list, the form Vespa's XGBoost import and the OpenSearch LTR plugin read).

The graph reads one float32 matrix `input` (rows x features, in features.json's order; NaN = missing) and gives
the raw score.

A LightGBM student can instead be exported as its trees compiled to machine code by lleaves (LLVM;
`export.format=lleaves`): `model.lleaves.txt` (the model with a regression objective, read by lleaves) and the
compiled library for the CPU it runs on (`LleavesRunner`). On a served request's 100 candidates it scores several
times faster than `Booster.predict` (`make bench ARGS="--settings gbdt"`, docs/results.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from distill.graphs import runtime as graph
from distill.workspace import write_json_atomic, write_text_atomic

INPUT = "input"


def library(booster: Any) -> str:
    return "xgboost" if hasattr(booster, "get_dump") else "lightgbm"


def to_onnx(booster: Any, n_features: int, path: Path) -> tuple[Path, str]:
    """The trees as an ONNX graph at `path`, and the name of its score output."""
    onnxmltools = graph._need("onnxmltools")
    from onnxmltools.convert.common.data_types import FloatTensorType

    types = [(INPUT, FloatTensorType([None, n_features]))]
    if library(booster) == "xgboost":
        # the raw margin, whatever the training objective (rank:ndcg would be converted as a classifier)
        regression = booster.copy()
        regression.set_param({"objective": "reg:squarederror"})
        onx = onnxmltools.convert_xgboost(regression, initial_types=types)
    else:
        import lightgbm as lgb

        text = regression_text(booster)
        onx = onnxmltools.convert_lightgbm(lgb.Booster(model_str=text), initial_types=types, zipmap=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onx.SerializeToString())
    return path, onx.graph.output[0].name


def regression_text(booster: Any) -> str:
    """A LightGBM booster's model text with its objective set to regression: the students rank by the raw score
    whatever they were trained with (a custom distillation objective, lambdarank), which converters and compilers
    (onnxmltools, lleaves, treelite) then read as a regression's identity output. A custom objective leaves no
    objective line in the header: one is added."""
    text = booster.model_to_string()
    if re.search(r"^objective=", text, flags=re.M):
        text = re.sub(r"^objective=.*$", "objective=regression", text, count=1, flags=re.M)
    else:
        text = re.sub(r"^feature_names=", "objective=regression\nfeature_names=", text, count=1, flags=re.M)
    return re.sub(r"^\[objective: .*\]$", "[objective: regression]", text, count=1, flags=re.M)


def write_native(booster: Any, out: Path) -> list[str]:
    """The library's own model files in `out`; their names."""
    if library(booster) == "xgboost":
        booster.save_model(str(out / "model.json"))
        trees = [json.loads(t) for t in booster.get_dump(dump_format="json")]
        write_json_atomic(trees, out / "xgboost_dump.json")
        return ["model.json", "xgboost_dump.json"]
    write_text_atomic(booster.model_to_string(), out / "model.txt")
    write_json_atomic(booster.dump_model(), out / "lightgbm.json")
    return ["model.txt", "lightgbm.json"]


def feature_spec(
    names: list[str], about: dict[str, tuple[str, str]], options: dict[str, Any]
) -> dict[str, Any]:
    """features.json: each input feature in column order with the family that computes it and how; and the
    options the features were built with."""
    return {
        "input": INPUT,
        "missing": "NaN",
        "features": [
            {
                "index": i,
                "name": n,
                "computed_by": about.get(n, ("", ""))[0],
                "about": about.get(n, ("", ""))[1],
            }
            for i, n in enumerate(names)
        ],
        "options": options,
    }


class LleavesRunner:
    """A LightGBM model compiled by lleaves: `runner({INPUT: X}) -> {"score": raw scores}` (float64, as
    `Booster.predict(raw_score=True)`). Machine code is specific to a CPU: the library is cached beside the model
    as `lleaves.<cpu>-<features hash>.so`, compiled on the first load on a CPU that has none (written whole, then
    renamed, so an interrupted compile leaves no half library)."""

    def __init__(self, path: Path, threads: int = 0, precision: str = "auto"):
        import hashlib
        import os

        from distill.errors import ConfigError

        lleaves = graph._need("lleaves")
        import llvmlite.binding as llvm

        cpu = llvm.get_host_cpu_name()
        key = hashlib.sha256(llvm.get_host_cpu_features().flatten().encode()).hexdigest()[:12]
        lib = path.with_name(f"lleaves.{cpu}-{key}.so")
        self.model = lleaves.Model(model_file=str(path))
        try:
            if lib.is_file():
                self.model.compile(cache=str(lib), raw_score=True)
            else:
                part = lib.with_name(f".{lib.name}.{os.getpid()}.part")
                self.model.compile(cache=str(part), raw_score=True)
                os.replace(part, lib)
        except AttributeError as e:  # lleaves 1.3 calls llvmlite's legacy pass manager, gone in llvmlite 0.45
            raise ConfigError(
                f"lleaves cannot compile {path} with llvmlite {llvm.llvm_version_info}: {e}; "
                f"pip install 'llvmlite<0.45' (the export extra pins it)"
            ) from e
        self.threads = (
            threads or 1
        )  # a served request's 100 rows: one thread (lleaves splits rows across them)
        self.precision = "fp64"
        self.library = lib.name

    def __call__(self, feats: dict[str, Any]) -> dict[str, np.ndarray]:
        return {"score": self.model.predict(np.asarray(feats[INPUT], np.float64), n_jobs=self.threads)}


class GraphPredict:
    """A GBDT folder's adapter for a served export: the predict function over the feature matrix runs the
    graph instead."""

    def __init__(self, runner: Callable[[dict[str, Any]], dict[str, np.ndarray]], output: str):
        self.runner, self.output = runner, output

    def __call__(self, predict: Any) -> Callable[[np.ndarray], np.ndarray]:
        def run(X: np.ndarray) -> np.ndarray:
            return np.asarray(self.runner({INPUT: np.asarray(X, np.float32)})[self.output]).reshape(-1)

        return run


__all__ = [
    "INPUT",
    "GraphPredict",
    "LleavesRunner",
    "feature_spec",
    "library",
    "regression_text",
    "to_onnx",
    "write_native",
]
