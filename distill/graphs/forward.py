"""A neural student's export: its sentence-transformers model's forward as one graph, checked against the model
on the student's own inputs.

The student scores calibration rows through its own `load` with a `Recorder` as the folder's adapter
(`Context.adapters`): each call of the model's forward keeps its input tensors, keyword arguments and the tensors
it adds or rewrites. The graph is traced on the largest recorded call, run on every recorded call and compared
with what the model gave (a graph that differs is refused), and the recorded calls calibrate static int8. When the
export is served, `GraphForward` stands in for the forward the same way, so the student's own tokenising, pooling
outside the graph and scoring code run unchanged around the graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.errors import DataError
from distill.graphs import runtime as graph

# the fp32 graph against the model (ONNX Runtime): the largest difference allowed, relative to each output's
# largest magnitude (a traced graph is the model within float rounding: 2e-6 on the real MiniLM cross-encoder)
GRAPH_CHECK = 1e-3


@dataclass
class Call:
    inputs: dict[str, torch.Tensor]
    kwargs: dict[str, Any]
    outputs: dict[str, torch.Tensor]  # the tensors the forward added or rewrote


class Recorder:
    """A folder's adapter that records its model's forward calls (the model itself still computes them)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.model: Any = None

    def __call__(self, model: Any) -> Any:
        if not isinstance(model, torch.nn.Module):
            raise DataError(f"{type(model).__name__} is not a torch module: this student has no neural graph")
        self.model = model
        original = model.forward

        def forward(features: dict[str, Any], **kwargs: Any) -> Any:
            ins = {k: v.detach().clone() for k, v in features.items() if torch.is_tensor(v)}
            out = original(features, **kwargs)
            new = {
                k: v.detach().clone()
                for k, v in out.items()
                if torch.is_tensor(v)
                and (k not in ins or v.shape != ins[k].shape or not torch.equal(v, ins[k]))
            }
            self.calls.append(Call(ins, dict(kwargs), new))
            return out

        model.forward = forward
        return model

    def release(self) -> Any:
        """The model with its own forward back."""
        if self.model is not None and "forward" in vars(self.model):
            del self.model.forward
        return self.model


def outputs_of(calls: list[Call], where: str) -> list[str]:
    """The forward outputs every recorded call gave (the graph's outputs), in a fixed order."""
    if not calls:
        raise DataError(
            f"{where}: the student made no forward call on the calibration rows; nothing to export"
        )
    keys = set(calls[0].outputs)
    for c in calls[1:]:
        keys &= set(c.outputs)
    if not keys:
        raise DataError(f"{where}: the model's forward gave no tensor output; nothing to export")
    return sorted(keys)


def trace(model: Any, calls: list[Call], path: Path, where: str) -> tuple[Path, dict[str, str]]:
    """The model's forward as an ONNX graph at `path`, traced on the largest recorded call, and the map from the
    graph's output names to the forward's keys. Calls with other keyword arguments (e.g. query and document
    tasks) must give the same forward: `check` compares the graph with every call."""
    keys = outputs_of(calls, where)
    largest = max(calls, key=lambda c: sum(t.numel() for t in c.inputs.values()))
    graph.to_onnx(model, largest.inputs, keys, path, largest.kwargs)
    return path, {graph.output_name(k, largest.inputs): k for k in keys}


def check(runner: Any, outputs: dict[str, str], calls: list[Call], where: str, tolerance: float) -> float:
    """The largest difference between the graph's outputs and the recorded ones, relative to each output's
    largest magnitude; refused above `tolerance` (the graph is not the model)."""
    worst = 0.0
    for c in calls:
        got = runner(c.inputs)
        for name, key in outputs.items():
            want = c.outputs[key].float().numpy()
            have = np.asarray(got[name], dtype=np.float32)
            if have.shape != want.shape:
                raise DataError(
                    f"{where}: the graph's {key} has shape {have.shape}, the model's {want.shape} "
                    f"(call with {c.kwargs or 'no options'}): this model cannot be exported as one graph"
                )
            scale = max(float(np.abs(want).max(initial=0.0)), 1e-6)
            worst = max(worst, float(np.abs(have - want).max(initial=0.0)) / scale)
    if worst > tolerance:
        raise DataError(
            f"{where}: the exported graph differs from the model by {worst:.2g} (relative; allowed {tolerance}): "
            f"its forward depends on more than its input tensors and cannot be exported as one graph"
        )
    return worst


class GraphForward:
    """A folder's adapter for a served export: the model's forward runs the graph (`runner`) and returns the
    features with the graph's outputs under the forward's keys."""

    def __init__(self, runner: Callable[[dict[str, Any]], dict[str, np.ndarray]], outputs: dict[str, str]):
        self.runner, self.outputs = runner, outputs

    def __call__(self, model: Any) -> Any:
        runner, outputs = self.runner, self.outputs

        def forward(features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
            got = runner(features)
            out = dict(features)
            for name, key in outputs.items():
                out[key] = torch.from_numpy(np.ascontiguousarray(got[name]))
            return out

        model.forward = forward
        return model


__all__ = ["GRAPH_CHECK", "Call", "GraphForward", "Recorder", "check", "outputs_of", "trace"]
