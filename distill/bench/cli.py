"""`make bench`: every benchmark of the project, one CLI. Each setting prints one JSON record per line as it is
measured, and the run's records (each with the machine it ran on) are written to `bench.json` (`--out`).

Teacher settings (distill/bench/teacher.py; the engine against sentence-transformers' `CrossEncoder.predict` on
the same pairs): fp32, bf16, int8, default (teacher.dtype=auto), fp16 (GPU), NAME+compile, llm / llm-bf16 /
llm-fp16 (the Qwen3-Reranker-0.6B shape); `job`: the whole `make teacher-score` job on real datasets' candidates
(--job-data) against `CrossEncoder.predict`. `precision`: fp32/bf16/int8 of a workspace's trained teacher
(--workspace, --data; distill/bench/precision.py). `gbdt`: GBDT training and scoring; `objectives`: the
distillation objectives' time and memory with mixed query sizes (distill/bench/students.py); `scale`: the
pipeline's stages at 1x/10x/100x the sample world, seconds and peak RSS (distill/bench/scale.py); `export`:
the graphs of `make export` (ONNX Runtime, OpenVINO, int8) against PyTorch on real weights (distill/bench/export.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from distill.bench.export import export_bench
from distill.bench.precision import precision_setting
from distill.bench.scale import scale_bench
from distill.bench.students import gbdt_bench, objectives_bench
from distill.bench.teacher import (
    build_bench_model,
    build_real_bench_model,
    fp32_reference,
    job_setting,
    llm_setting,
    measured_bf16_peak,
    real_pairs,
    teacher_setting,
)
from distill.ir.timing import machine
from distill.teacher.schema import TeacherConfig

ROOT = Path(__file__).resolve().parents[2]
NOT_TEACHER = ("gbdt", "objectives", "scale", "precision", "export")


class Records:
    """The run's records: each printed as a JSON line when measured, all written to `out` (rewritten whole
    after each, so an interrupted run keeps what it measured), each with the machine's description."""

    def __init__(self, out: Path, machine: dict[str, Any]):
        from distill.workspace import write_json_atomic

        self.out, self.machine, self._write = out, machine, write_json_atomic
        self.lines: list[dict[str, Any]] = []

    def add(self, record: dict[str, Any]) -> None:
        print(json.dumps(record), flush=True)
        self.lines.append(record)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._write({"machine": self.machine, "records": self.lines}, self.out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--pairs", type=int, default=800, help="pairs per teacher setting (precision: about this many)"
    )
    ap.add_argument("--llm-pairs", type=int, default=16, help="pairs for the llm settings (CPU: few)")
    ap.add_argument(
        "--llm-per-query",
        type=int,
        default=8,
        help="the llm settings' pairs per query (a job scores a query's top-k together; MS MARCO's have 26)",
    )
    ap.add_argument(
        "--settings",
        default="fp32,bf16,int8,default,gbdt",
        help="also: job, objectives, scale, export, llm, llm-bf16, llm-fp16, fp16, NAME+compile",
    )
    ap.add_argument(
        "--scales", default="1,10,100", help="for the scale setting: multiples of the sample world"
    )
    ap.add_argument(
        "--job-data",
        default="vaswani:20,flagembedding:100",
        help="for the job setting: DATA:K, the BM25 top K of each dataset scored by the whole teacher-score job",
    )
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--models",
        default="random,real",
        help="MiniLM-L6 with random weights and/or real (fine-tuned) weights",
    )
    ap.add_argument("--threads", type=int, default=None)
    bar = TeacherConfig()
    ap.add_argument(
        "--min-spearman",
        type=float,
        default=bar.min_spearman,
        help="the int8 setting: the Spearman its calibration must keep (teacher.min_spearman)",
    )
    ap.add_argument(
        "--min-kendall",
        type=float,
        default=bar.min_kendall,
        help="the int8 setting: the mean per-query Kendall its calibration must keep (teacher.min_kendall)",
    )
    ap.add_argument(
        "--engine", default="bm25s", help="for the scale setting: retrieval.engine (bm25s or tantivy)"
    )
    ap.add_argument("--workspace", help="for the precision setting: a workspace with a trained teacher")
    ap.add_argument("--data", default="sample", help="for the precision setting: its data= config")
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "outputs" / "bench.json",
        help="where the run's records are written",
    )
    args = ap.parse_args(argv)
    records = Records(args.out, machine())
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    settings = args.settings.split(",")
    teacher = [s for s in settings if s not in NOT_TEACHER and not s.startswith("llm")]
    llm = [s for s in settings if s.startswith("llm")]
    pairs = real_pairs(args.pairs) if teacher or llm else []
    peak = measured_bf16_peak() if device == "cuda" and (teacher or llm) else None
    for s in [s for s in settings if s in ("gbdt", "objectives")]:
        for line in gbdt_bench(threads=torch.get_num_threads()) if s == "gbdt" else objectives_bench():
            records.add(line)
    if "export" in settings:
        with tempfile.TemporaryDirectory() as tmp:
            for line in export_bench(args.pairs, Path(tmp), args.repeats):
                records.add(line)
    if "scale" in settings:
        for line in scale_bench([int(x) for x in args.scales.split(",")], engine=args.engine):
            records.add(line)
    if "precision" in settings:
        if not args.workspace:
            raise SystemExit("--settings precision needs --workspace (a workspace with a trained teacher)")
        for line in precision_setting(args.workspace, args.data, args.pairs):
            records.add(line)
    for s in llm:  # its own model; a record without and one with shared prefixes
        for llm_line in llm_setting(s, pairs, args, device, peak) or []:
            records.add(llm_line)
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(",") if teacher else []:
            if model not in ("random", "real"):
                raise SystemExit(f"--models: {model!r} is not random or real")
            build = build_bench_model if model == "random" else build_real_bench_model
            model_dir = build(Path(tmp) / f"minilm-{model}")
            ref = fp32_reference(model_dir, pairs, args.max_length, device)
            for s in teacher:
                if s == "job":  # the whole scoring job, on real weights only (its ranking is compared)
                    for spec in args.job_data.split(",") if model == "real" else []:
                        data, _, k = spec.partition(":")
                        res = job_setting(data, int(k or 20), model_dir, Path(tmp), args.repeats)
                        records.add({"model": f"MiniLM-L6 {model} weights", **res})
                    continue
                measured = teacher_setting(s, model_dir, pairs, args, device, peak, ref)
                if measured is not None:
                    records.add({"model": f"MiniLM-L6 {model} weights", **measured})


if __name__ == "__main__":
    main()
