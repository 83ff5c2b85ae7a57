"""`export.*`: `make export` (distill/export/stage.py)."""

from __future__ import annotations

from dataclasses import dataclass

from distill.config import check, check_at_least, check_positive

# lleaves: a LightGBM student's trees compiled to machine code (LightGBM students only, no int8)
FORMATS = ("onnx", "openvino", "lleaves")
QUANTIZE = ("none", "int8")


def tag(fmt: str, quantize: str) -> str:
    """The name of an export kind: onnx, onnx-int8, openvino, openvino-int8, lleaves (a ranker `NAME@TAG`)."""
    return fmt + ("-int8" if quantize == "int8" else "")


TAGS = (*(tag(f, q) for f in ("onnx", "openvino") for q in QUANTIZE), "lleaves")


@dataclass
class ExportConfig:
    """`make export ARGS="export.student=NAME export.format=onnx export.quantize=int8"`: a trained student as
    a graph in `<workspace>/exports/<student>-<format>[-int8]/`, with its fidelity to the original."""

    # the student's name (its folder's, as `make evaluate` lists it: bi_encoder_kl, cross_encoder_margin_mse,
    # lightgbm, ...)
    student: str = ""
    format: str = "onnx"  # onnx (ONNX Runtime) | openvino | lleaves (LightGBM students: compiled trees)
    # int8: static weights and activations, calibrated on the workspace's own train queries (neural students)
    quantize: str = "none"
    # train queries whose top candidates (by BM25) calibrate int8 and check the graph against the model
    calibration_queries: int = 32
    calibration_candidates: int = 20
    # test queries the fidelity (per-query Kendall, nDCG@10, ms per query) is measured on (0: all of them)
    fidelity_queries: int = 0
    threads: int = 0  # the runtime's threads (0: its default)
    # OpenVINO's inference precision: auto (its default hint: bf16 on CPUs with native bf16, f32 elsewhere) | f32
    precision: str = "auto"

    def __post_init__(self) -> None:
        check(self.format in FORMATS, "export.format", self.format, f"use one of {list(FORMATS)}")
        check(self.quantize in QUANTIZE, "export.quantize", self.quantize, f"use one of {list(QUANTIZE)}")
        check(
            tag(self.format, self.quantize) in TAGS,
            "export.quantize",
            self.quantize,
            f"export.format={self.format} compiles the trees as they are: use export.quantize=none",
        )
        check_positive(self, "export", "calibration_queries", "calibration_candidates")
        check_at_least(self, "export", 0, "fidelity_queries", "threads")
        check(self.precision in ("auto", "f32"), "export.precision", self.precision, "use auto or f32")


__all__ = ["FORMATS", "QUANTIZE", "TAGS", "ExportConfig", "tag"]
