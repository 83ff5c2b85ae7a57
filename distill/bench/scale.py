"""`make bench ARGS="--settings scale"`: the pipeline at 1x, 10x and 100x the sample world, seconds and peak RSS
per stage.

Each stage runs as its own process (the scripts `make` runs), which reports its own peak resident memory (VmHWM in
/proc/self/status, Linux) when it exits: a child's rusage would count the memory of the benchmark that forked it. The teacher is not run: at 100x it would score 8.5M pairs. Instead a stand-in teacher
(graded relevance plus seeded noise) is written as Parquet and brought in through the soft-label importer, which
is the stage that is measured. The stand-in makes the GBDT's work realistic (a ranking to learn); its quality is
not the point. Everything is written under a temporary folder in outputs/ that is deleted afterwards. After the
scales, each stage is extrapolated to MS MARCO passage's size (`extrapolate`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distill.workspace import Workspace

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


def scale_run(
    scale: int, tmp: Path, student: str = "lightgbm", engine: str = "bm25s"
) -> Iterator[dict[str, Any]]:
    """The pipeline at `scale` in a fresh workspace under `tmp`: one record per stage (seconds, peak RSS, the
    documents and candidate pairs of that scale)."""
    ws, data = tmp / f"ws{scale}", tmp / f"data{scale}"
    retrieval = ["retrieval=tantivy"] if engine == "tantivy" else []
    common = [f"paths.workspace={ws}", f"data.path={data}", "logger=none", *scaled_options(scale), *retrieval]
    measured: list[tuple[str, dict[str, float]]] = []
    pairs = 0
    for stage in STAGES:
        if stage == "import_labels":
            labels = tmp / f"labels{scale}.parquet"
            pairs = stand_in_teacher(ws / "candidates.parquet", data / "qrels", labels)
            argv = ["-m", "distill.teacher.importers", "parquet", str(labels), str(ws)]
        else:
            extra = [f"student={student}"] if stage == "train_student" else []
            argv = [f"scripts/{stage}.py", *common, *extra]
        measured.append((stage, run_measured(argv, tmp / f"{stage}{scale}.log")))
    with open(data / "corpus.jsonl") as f:
        docs = sum(1 for _ in f)
    # the BM25 indexes' bytes per document of the stages that build one (the one structure allowed to grow with
    # the corpus): the candidates' search index, the features' per-field indexes
    index_bytes = {
        "candidates": json.loads(Workspace(ws).candidates_metrics.read_text()).get("index_bytes_per_doc"),
        "features": json.loads(Workspace(ws).features_record.read_text()).get("index_bytes_per_doc"),
    }
    for stage, figures in measured:
        yield {
            "setting": "scale",
            "scale": scale,
            "stage": stage,
            "documents": docs,
            "pairs": pairs,
            "engine": engine,
            "student": student,
            **figures,
            **({"index_bytes_per_doc": index_bytes[stage]} if index_bytes.get(stage) else {}),
        }


# MS MARCO passage: 8.8M passages; ~500k training queries (plus dev) at BM25 top 100: ~50M pairs
MSMARCO = {"documents": 8_841_823, "pairs": 50_000_000}


def _less_index(r: dict[str, Any]) -> float:
    """A record's peak RSS (MiB) less its BM25 index's bytes."""
    return r["peak_rss_mib"] - r["index_bytes_per_doc"] * r["documents"] / 2**20


def extrapolate(records: list[dict[str, Any]], target: dict[str, int] = MSMARCO) -> list[dict[str, Any]]:
    """Each stage at the target size, from its two largest measured scales: seconds in proportion to the pairs
    (time per pair as measured at the largest), peak RSS along the line through the two points by pairs and,
    since the sample world grows its documents and pairs together while MS MARCO has more documents per pair,
    also along the line by documents (the bound if all growth came from the corpus)."""
    out = []
    for stage in STAGES:
        rows = sorted((r for r in records if r["stage"] == stage), key=lambda r: r["pairs"])
        if len(rows) < 2:
            continue
        a, b = rows[-2], rows[-1]
        slope = (b["peak_rss_mib"] - a["peak_rss_mib"]) / max(1, b["pairs"] - a["pairs"])
        by_docs = (b["peak_rss_mib"] - a["peak_rss_mib"]) / max(1, b["documents"] - a["documents"])
        out.append(
            {
                "setting": "scale-extrapolated",
                "stage": stage,
                "from_scales": [a["scale"], b["scale"]],
                "target": target,
                "seconds": round(b["seconds"] * target["pairs"] / b["pairs"], 0),
                "peak_rss_mib": round(b["peak_rss_mib"] + slope * (target["pairs"] - b["pairs"]), 0),
                "peak_rss_mib_by_documents": round(
                    b["peak_rss_mib"] + by_docs * (target["documents"] - b["documents"]), 0
                ),
                # peak RSS and pairs of the largest scale over the one before it (10x from 10 to 100, 3x to 300)
                "rss_growth": round(b["peak_rss_mib"] / a["peak_rss_mib"], 2),
                # the same less the BM25 index's own bytes (the one structure that grows with the corpus), for
                # a stage that builds one
                **(
                    {"rss_growth_less_index": round(_less_index(b) / _less_index(a), 2)}
                    if a.get("index_bytes_per_doc") and b.get("index_bytes_per_doc")
                    else {}
                ),
                "pairs_growth": round(b["pairs"] / max(1, a["pairs"]), 2),
                "seconds_per_million_pairs": round(1e6 * b["seconds"] / b["pairs"], 2),
            }
        )
    return out


def scale_bench(
    scales: list[int], student: str = "lightgbm", engine: str = "bm25s"
) -> Iterator[dict[str, Any]]:
    """One record per stage and scale as soon as measured, then each stage extrapolated to MS MARCO's size.
    The runs live under outputs/ (the project's own folder), removed afterwards."""
    records = []
    (ROOT / "outputs").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=ROOT / "outputs") as tmp:
        for s in scales:
            for r in scale_run(s, Path(tmp), student, engine):
                records.append(r)
                yield r
    yield from extrapolate(records)
