"""`make bench`: throughput benchmarks, one JSON line per setting.

Teacher settings (distill/teacher/bench.py; the engine against sentence-transformers' `CrossEncoder.predict` on
the same pairs): fp32, bf16, int8, default (teacher.dtype=auto), fp16 (GPU), NAME+compile; `job`: the whole
`make teacher-score` job on real datasets' candidates (--job-data) against `CrossEncoder.predict`. `gbdt`: GBDT
training and scoring; `objectives`: the distillation objectives' time and memory with mixed query sizes
(distill/students/bench.py); `scale`: the pipeline's stages at 1x/10x/100x the sample world, seconds and peak
RSS (distill/scale_bench.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from distill.scale_bench import scale_bench
from distill.students.bench import gbdt_bench, objectives_bench
from distill.teacher.bench import (
    build_bench_model,
    build_real_bench_model,
    fp32_reference,
    job_setting,
    measured_bf16_peak,
    real_pairs,
    teacher_setting,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=800)
    ap.add_argument("--llm-pairs", type=int, default=16, help="pairs for the llm settings (CPU: few)")
    ap.add_argument(
        "--settings",
        default="fp32,bf16,int8,default,gbdt",
        help="also: job, objectives, scale, llm, llm-bf16, llm-fp16, fp16, NAME+compile",
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
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    settings = args.settings.split(",")
    teacher = [s for s in settings if s not in ("gbdt", "objectives", "scale") and not s.startswith("llm")]
    llm = [s for s in settings if s.startswith("llm")]
    pairs = real_pairs(args.pairs) if teacher or llm else []
    peak = measured_bf16_peak() if device == "cuda" and (teacher or llm) else None
    for s in [s for s in settings if s in ("gbdt", "objectives")]:
        for line in gbdt_bench(threads=torch.get_num_threads()) if s == "gbdt" else objectives_bench():
            print(json.dumps(line), flush=True)
    if "scale" in settings:
        for line in scale_bench([int(x) for x in args.scales.split(",")]):
            print(json.dumps(line), flush=True)
    for s in llm:  # its own model
        res = teacher_setting(s, Path("."), pairs, args, device, peak)
        if res is not None:
            print(json.dumps(res), flush=True)
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
                        print(json.dumps({"model": f"MiniLM-L6 {model} weights", **res}), flush=True)
                    continue
                res = teacher_setting(s, model_dir, pairs, args, device, peak, ref)
                if res is not None:
                    print(json.dumps({"model": f"MiniLM-L6 {model} weights", **res}), flush=True)


if __name__ == "__main__":
    main()
