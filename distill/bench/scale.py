"""`make bench ARGS="--settings scale"`: the pipeline at 1x, 10x and 100x the sample world, seconds and peak RSS
per stage.

Each stage runs as its own process (the scripts `make` runs), which reports its own peak resident memory (VmHWM in
/proc/self/status, Linux) when it exits: a child's rusage would count the memory of the benchmark that forked it. The teacher is not run: at 100x it would score 8.5M pairs. Instead a stand-in teacher
(graded relevance plus seeded noise) is written as Parquet and brought in through the soft-label importer, which
is the stage that is measured. The stand-in makes the GBDT's work realistic (a ranking to learn); its quality is
not the point. Everything is written under a temporary folder that is deleted afterwards.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
BASE = {"n_docs": 6000, "n_train": 600, "n_test": 250, "n_topics": 120}
STAGES = ("data", "candidates", "import_labels", "features", "train_student")


def scaled_options(scale: int) -> list[str]:
    """The sample world `scale` times larger: documents, queries and topics (so documents per topic and the
    vocabulary per topic stay as they are)."""
    return [f"data.options.{k}={v * scale}" for k, v in BASE.items()]


# Runs a script (or `-m module`) after arranging for its peak RSS (KiB) to be written to argv[1] at exit.
_WRAP = """
import atexit, runpy, sys
out, target, sys.argv = sys.argv[1], sys.argv[2], sys.argv[2:]
def peak():
    hwm = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")]
    open(out, "w").write(hwm[0])
atexit.register(peak)
if target == "-m":
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:
    runpy.run_path(target, run_name="__main__")
"""


def run_measured(argv: list[str], log: Path) -> dict[str, float]:
    """Run `argv` (a script or `-m module` and its arguments) in a fresh Python to completion; its wall seconds
    and peak RSS (MiB). A failure raises with the log's tail."""
    peak = log.with_suffix(".peak")
    t0 = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.run(
            [sys.executable, "-c", _WRAP, str(peak), *argv], cwd=ROOT, stdout=out, stderr=out
        ).returncode
    seconds = time.perf_counter() - t0
    if rc != 0:
        tail = log.read_text().strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(argv[:2])} failed ({rc}): " + " | ".join(tail))
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(int(peak.read_text()) / 1024, 1)}


def stand_in_teacher(candidates: Path, qrels_dir: Path, out: Path, seed: int = 0) -> int:
    """Scores for every candidate: its relevance grade plus N(0, 0.5) noise, written as qid, docid, score."""
    c = pd.read_parquet(candidates, columns=["qid", "docid"])
    qrels = pd.concat(pd.read_csv(f, sep="\t", dtype=str) for f in sorted(qrels_dir.glob("*.tsv")))
    grade = dict(
        zip(qrels["query-id"] + "\t" + qrels["corpus-id"], qrels["score"].astype(float), strict=True)
    )
    key = c["qid"].astype(str) + "\t" + c["docid"].astype(str)
    g = key.map(grade).fillna(0.0).to_numpy(np.float32)
    noise = np.random.default_rng(seed).normal(0.0, 0.5, len(c)).astype(np.float32)
    pd.DataFrame({"qid": c["qid"], "docid": c["docid"], "score": g + noise}).to_parquet(out)
    return len(c)


def scale_run(scale: int, tmp: Path, student: str = "lightgbm") -> dict[str, Any]:
    """The pipeline at `scale` in a fresh workspace under `tmp`; one dict of per-stage figures."""
    ws, data = tmp / f"ws{scale}", tmp / f"data{scale}"
    common = [f"paths.workspace={ws}", f"data.path={data}", "logger=none", *scaled_options(scale)]
    stages: dict[str, dict[str, float]] = {}
    for stage in STAGES:
        if stage == "import_labels":
            labels = tmp / f"labels{scale}.parquet"
            pairs = stand_in_teacher(ws / "candidates.parquet", data / "qrels", labels)
            argv = ["-m", "distill.teacher.importers", "parquet", str(labels), str(ws)]
        else:
            extra = [f"student={student}"] if stage == "train_student" else []
            argv = [f"scripts/{stage}.py", *common, *extra]
        stages[stage] = run_measured(argv, tmp / f"{stage}{scale}.log")
    with open(data / "corpus.jsonl") as f:
        docs = sum(1 for _ in f)
    return {
        "setting": "scale",
        "scale": scale,
        "documents": docs,
        "pairs": pairs,
        "student": student,
        **stages,
    }


def scale_bench(scales: list[int], student: str = "lightgbm") -> Iterator[dict[str, Any]]:
    """One line per scale, each as soon as it is measured."""
    with tempfile.TemporaryDirectory(prefix="distill-scale-") as tmp:
        for s in scales:
            yield scale_run(s, Path(tmp), student)
