"""`make export`: a trained student as a graph that serves without PyTorch, with its fidelity to the original.

    make export ARGS="export.student=bi_encoder_kl export.format=onnx export.quantize=int8"

writes `<workspace>/exports/<student>-<tag>/` as a whole (tag: onnx, onnx-int8, openvino, openvino-int8):

- a neural student (bi-encoder, cross-encoder, multi-vector, sparse): `model.onnx` or OpenVINO's `model.xml` +
  `model.bin`: the sentence-transformers model's forward (distill/graphs/forward.py), checked against the model on
  the calibration rows; int8 is static (weights and activations), calibrated on the workspace's own train queries
  and their candidates; beside it the student folder's tokenizer and module configs (not its weights);
- a GBDT student: `model.onnx`, the library's own files and `features.json` (distill/export/gbdt.py); a
  LightGBM student with `export.format=lleaves`: its trees compiled by lleaves instead of the ONNX graph;
- `export.json`: the student, its folder's fingerprint, the graph's inputs and outputs, the runtime and precision,
  the graph check, and the fidelity on the test queries, for each of the student's rankers: mean per-query
  Kendall tau against the original's scores, nDCG@10 of both, and the median ms per query of both.

`make serve ARGS="serve.student=NAME serve.backend=onnx-int8"` serves an export, and `make evaluate` lists each as a
ranker of its own (`NAME@TAG`). An export is loaded only while its student folder is the one it was exported from
(the fingerprint): after retraining it is stale, refused by the server and left out by evaluation, until exported
again.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import is_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from distill.config import load_callable, typed
from distill.data.prepare import load_dataset
from distill.errors import ConfigError, DataError, StageNotReadyError
from distill.export import gbdt
from distill.export.schema import TAGS, ExportConfig, tag
from distill.graphs import forward as neural
from distill.graphs import runtime as graph
from distill.ir import fingerprint
from distill.ir.metrics import kendall_per_query, quality
from distill.ir.timing import machine, median_ms, query_groups
from distill.retrieval.candidates import checked_candidates
from distill.students.base import (
    Context,
    FunctionScorer,
    Scorer,
    find_scorer,
    load_scorers,
    student_dirs,
    student_meta,
    student_module,
)
from distill.workspace import Workspace, check_complete, staged_dir, write_json_atomic

log = logging.getLogger(__name__)

EXPORT_FILE = "export.json"
# what an export should keep of the original (per-query Kendall tau, nDCG@10 difference): below, a warning
MIN_KENDALL, MAX_NDCG_DROP = 0.95, 0.005
GBDT_CHECK = 1e-5  # the largest difference a GBDT graph may have from the booster's raw score
WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")  # not copied beside a graph


# --- finding -------------------------------------------------------------------------------------------------


def find_student(ws: Workspace, name: str) -> Path:
    """The folder of the trained student called `name` (its student.json's name)."""
    dirs = student_dirs(ws)
    if not dirs:
        raise StageNotReadyError(
            f'{ws.root} has no trained student: run `make train-student ARGS="student=NAME"` first'
        )
    names = {str(student_meta(d)["name"]): d for d in dirs}
    if not name or name not in names:
        raise ConfigError(
            f"export.student={name!r}: {'not set' if not name else 'no trained student of that name'}; "
            f"trained: {sorted(names)}"
        )
    return names[name]


def export_dirs(ws: Workspace) -> list[Path]:
    """Every export folder of the workspace (those holding an export.json)."""
    return [
        p.parent for p in sorted(ws.exports.glob(f"*/{EXPORT_FILE}")) if not p.parent.name.startswith(".")
    ]


def export_meta(folder: Path) -> dict[str, Any]:
    f = folder / EXPORT_FILE
    try:
        import json

        meta = json.loads(f.read_text())
        keys = {"student", "student_dir", "student_fingerprint", "kind", "tag", "graph", "outputs"}
        assert isinstance(meta, dict) and keys <= set(meta)
    except (OSError, ValueError, AssertionError) as e:
        raise DataError(
            f"{f} is damaged or not an export's: export again (make export) or remove {folder}"
        ) from e
    return meta


def export_command(meta: dict[str, Any]) -> str:
    fmt, _, q = str(meta["tag"]).partition("-")
    return f'make export ARGS="export.student={meta["student"]} export.format={fmt} export.quantize={q or "none"}"'


def fresh_student(folder: Path, meta: dict[str, Any], ws: Workspace) -> Path:
    """The student folder an export was made from, refused when it is gone or changed since (retrained)."""
    model_dir = ws.root / str(meta["student_dir"])
    if not (model_dir / "student.json").is_file():
        raise StageNotReadyError(
            f"{folder}: its student {meta['student']} ({model_dir}) is gone: train it and `{export_command(meta)}`, "
            f"or remove {folder}"
        )
    if fingerprint.of_folder(model_dir) != meta["student_fingerprint"]:
        raise StageNotReadyError(
            f"{folder} is stale: {meta['student']} changed (retrained) since it was exported; "
            f"re-export it: {export_command(meta)}"
        )
    return model_dir


# --- runtimes ------------------------------------------------------------------------------------------------


def runner(folder: Path, meta: dict[str, Any], threads: int = 0) -> Any:
    """The export's graph on its runtime, in the precision it was exported and measured with."""
    kind = str(meta["tag"])
    cls = (
        graph.OpenVinoRunner
        if kind.startswith("openvino")
        else gbdt.LleavesRunner
        if kind == "lleaves"
        else graph.OnnxRunner
    )
    return cls(folder / str(meta["graph"]), threads, str(meta.get("precision", "auto")))


def adapter(meta: dict[str, Any], run: Any) -> Any:
    """What stands in for the student's model (`Context.adapters`) when the export serves."""
    if meta["kind"] == "gbdt":
        return gbdt.GraphPredict(run, next(iter(meta["outputs"])))
    return neural.GraphForward(run, dict(meta["outputs"]))


def renamed(scorer: Scorer, name: str) -> Scorer:
    if is_dataclass(scorer):
        return replace(scorer, name=name)  # type: ignore[type-var]
    return FunctionScorer(name, scorer.score, getattr(scorer, "search", None))


def adapted_scorers(model_dir: Path, ctx: Context, stand_in: Any, suffix: str) -> list[Scorer]:
    """The student's own scorers with `stand_in` for its model, each named `<name>@<suffix>`."""
    scorers = load_scorers(model_dir, replace(ctx, adapters={**ctx.adapters, model_dir.resolve(): stand_in}))
    return [renamed(s, f"{s.name}@{suffix}") for s in scorers]


def load_export(folder: Path, ctx: Context, threads: int = 0) -> list[Scorer]:
    """An export's rankers (`NAME@TAG`), after checking it is whole and its student unchanged."""
    check_complete(folder, f"export again (make export), or remove {folder}")
    meta = export_meta(folder)
    model_dir = fresh_student(folder, meta, ctx.ws)
    return adapted_scorers(model_dir, ctx, adapter(meta, runner(folder, meta, threads)), str(meta["tag"]))


def export_scorers(ctx: Context) -> list[Scorer]:
    """Every current export's rankers; a stale export is left out, with one line saying so."""
    out: list[Scorer] = []
    for folder in export_dirs(ctx.ws):
        try:
            out += load_export(folder, ctx)
        except StageNotReadyError as e:
            log.warning("left out: %s", e)
    return out


def find_ranker(ctx: Context, name: str, what: str) -> Scorer:
    """The scorer called `name`: a student's (find_scorer) or, for `NAME@TAG`, an export's (refused when stale)."""
    if "@" not in name:
        return find_scorer(ctx, name, what)[0]
    base, _, kind = name.rpartition("@")
    if kind not in TAGS:
        raise ConfigError(f"{what}={name!r}: unknown export kind {kind!r}; use one of {list(TAGS)}")
    known = []
    for folder in export_dirs(ctx.ws):
        meta = export_meta(folder)
        known.append(f"{meta['student']}@{meta['tag']}")
        if meta["tag"] == kind and base.startswith(str(meta["student"])):
            for s in load_export(folder, ctx):
                if s.name == name:
                    return s
    raise ConfigError(
        f"{what}={name!r}: no such export in {ctx.ws.exports} (exported: {sorted(known)}); make it with "
        f'make export ARGS="export.student={base.split("+")[0]} export.format={kind.split("-")[0]}'
        f'{" export.quantize=int8" if kind.endswith("-int8") else ""}"'
    )


# --- exporting -----------------------------------------------------------------------------------------------


def sample_rows(
    cands: pd.DataFrame, split: str, queries: int, per_query: int | None, seed: int
) -> pd.DataFrame:
    """A seeded sample of `queries` queries of the split (0: all) and each one's top `per_query` candidates."""
    part = cands[cands.split == split]
    qids = part.qid.unique()
    if queries and queries < len(qids):
        qids = np.random.default_rng(seed).choice(qids, size=queries, replace=False)
    rows = part[part.qid.isin(qids)].sort_values(["qid", "rank"])
    if per_query:
        rows = rows.groupby("qid", sort=False).head(per_query)
    return rows.reset_index(drop=True)


def copy_configs(model_dir: Path, out: Path) -> None:
    """The student folder's files but its weights (tokenizer, module configs): what a graph needs beside it."""
    for f in sorted(model_dir.rglob("*")):
        rel = f.relative_to(model_dir)
        if not f.is_file() or f.suffix in WEIGHTS or any(p.startswith(".") for p in rel.parts):
            continue
        if rel.parts[0] in ("checkpoints", "runs") or rel.name == "student.json":
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, out / rel)


def export_neural(model_dir: Path, ctx: Context, ec: ExportConfig, out: Path, where: str) -> dict[str, Any]:
    """The student's forward as a graph in `out`, checked against the model on the context's rows (which also
    calibrate int8)."""
    rec = neural.Recorder()
    scorers = load_scorers(model_dir, replace(ctx, adapters={model_dir.resolve(): rec}, cache={}))
    if rec.model is None:
        raise DataError(
            f"{where}: the student's loader passed no model through its context; it cannot be exported"
        )
    with torch.inference_mode():
        scorers[0].score(ctx.cands)
    model = rec.release()
    work = out / ".work"
    onnx_path, outputs = neural.trace(model, rec.calls, work / "model.onnx", where)
    fp32 = graph.OnnxRunner(onnx_path)
    worst = neural.check(fp32, outputs, rec.calls, where, neural.GRAPH_CHECK)
    samples = [c.inputs for c in rec.calls]
    search: dict[str, Any] = {}
    if ec.format == "onnx":
        final = out / "model.onnx"
        if ec.quantize == "int8":
            search = graph.quantize_onnx(onnx_path, final, samples)
        else:
            shutil.move(str(onnx_path), final)
    else:
        ir = graph.to_openvino(onnx_path, work / "ir")
        if ec.quantize == "int8":
            final, search = graph.quantize_openvino(ir, out, samples, onnx_path)
        else:
            final = graph.to_openvino(onnx_path, out)
    calibration = None
    if ec.quantize == "int8":
        built = runner(out, {"tag": tag(ec.format, ec.quantize), "graph": final.name, "precision": "f32"})
        reference = [fp32({k: v.numpy() for k, v in s.items()}) for s in samples]
        calibration = {
            "rows": len(ctx.cands),
            "queries": int(ctx.cands.qid.nunique()),
            "calls": len(samples),
            # the int8 graph against the fp32 graph on these calls (graph.agreement)
            "agreement": graph.agreement(reference, [built(s) for s in samples]),
            **({"search": search} if search else {}),
        }
    shutil.rmtree(work, ignore_errors=True)
    copy_configs(model_dir, out)
    return {
        "kind": "neural",
        "model_class": type(model).__name__,
        "graph": final.name,
        "inputs": sorted(samples[0]),
        "outputs": outputs,
        "graph_check": {"max_rel_diff_fp32": worst, "calls": len(rec.calls)},
        "calibration": calibration,
    }


def built_options(cfg: DictConfig, ws: Workspace) -> dict[str, Any]:
    """The retrieval and feature options features.parquet was built with (its record's)."""
    import json

    from distill.features.build import STAGE, stale_features

    try:
        recorded = json.loads(ws.features_record.read_text())
    except (OSError, ValueError):
        recorded = {}
    if isinstance(recorded, dict) and isinstance(recorded.get("options"), dict):
        return recorded["options"]
    changed = stale_features(cfg, ws)
    if changed:
        raise StageNotReadyError(
            f"{ws.features_record} does not say which options built features.parquet, and this run's "
            f"{', '.join(changed)} differ: rebuild the features (make features) or pass the overrides they were "
            f"built with"
        )
    return {"retrieval": fingerprint.plain(cfg.retrieval), "features": STAGE.config(cfg)[1]}


def feature_about(families: Any) -> dict[str, tuple[str, str]]:
    """Each feature's family (its class) and how it is computed."""
    from distill.features.family import load_families

    out: dict[str, tuple[str, str]] = {}
    for fam in load_families(families):
        cls = f"{type(fam).__module__}.{type(fam).__name__}"
        for n in fam.names:
            out[n] = (cls, fam.about.get(n, ""))
    return out


def export_gbdt(
    cfg: DictConfig, model_dir: Path, booster: Any, ec: ExportConfig, out: Path, where: str
) -> dict[str, Any]:
    from distill.students.gbdt import feature_names

    lib = gbdt.library(booster)
    if (
        ec.format not in ("onnx", "lleaves")
        or ec.quantize != "none"
        or (ec.format == "lleaves" and lib != "lightgbm")
    ):
        raise ConfigError(
            f"export.format={ec.format} export.quantize={ec.quantize}: a GBDT student ({where}) exports as "
            f"export.format=onnx export.quantize=none (with the library's own files beside it)"
            + (", or a LightGBM one as export.format=lleaves" if lib == "lightgbm" else "")
        )
    options = built_options(cfg, Workspace.from_cfg(cfg))
    names = feature_names(model_dir)
    if ec.format == "lleaves":
        path, output = out / "model.lleaves.txt", "score"
        path.write_text(gbdt.regression_text(booster))
    else:
        path, output = gbdt.to_onnx(booster, len(names), out / "model.onnx")
    files = gbdt.write_native(booster, out)
    about = feature_about(options["features"].get("families") or {})
    for n in names:
        if n not in about:
            about[n] = (
                "distill.students.stacking",
                f"the score of student {n.split(':', 1)[-1]} for the pair",
            )
    write_json_atomic(gbdt.feature_spec(names, about, options), out / "features.json")
    return {
        "kind": "gbdt",
        "library": lib,
        "graph": path.name,
        "inputs": [gbdt.INPUT],
        "outputs": {output: "score"},
        "native": files,
        "features": "features.json",
    }


def fidelity(
    model_dir: Path, ctx: Context, stand_in: Any, suffix: str, qrels: pd.DataFrame, groups: list[pd.DataFrame]
) -> dict[str, dict[str, Any]]:
    """Each of the student's rankers against its export on the context's rows: mean per-query Kendall tau of the
    export's scores against the original's, the largest score difference, nDCG@10 of both, median ms per query
    of both on `groups`."""
    originals = load_scorers(model_dir, replace(ctx, adapters={}, cache={}))
    exported = adapted_scorers(model_dir, replace(ctx, cache={}), stand_in, suffix)
    rows = ctx.cands
    out = {}
    for o, e in zip(originals, exported, strict=True):
        a, b = o.score(rows), e.score(rows)
        run = rows[["qid", "docid"]]
        nd_o = quality(qrels, run.assign(score=a))["ndcg@10"]
        nd_e = quality(qrels, run.assign(score=b))["ndcg@10"]
        ms_o, ms_e = median_ms(o.score, groups), median_ms(e.score, groups)
        tau = kendall_per_query(rows, b, a)
        if tau is None and np.ptp(a) > 0:  # the export scores every candidate alike: the ranking is lost
            tau = 0.0
        out[e.name] = {
            "kendall_tau": tau,
            "max_abs_diff": float(np.max(np.abs(a - b), initial=0.0)),
            "ndcg@10": nd_e,
            "ndcg@10_original": nd_o,
            "ndcg@10_diff": nd_e - nd_o,
            "ms_per_query": ms_e,
            "ms_per_query_original": ms_o,
            "speedup": ms_o / ms_e if ms_e > 0 else None,
            "queries": int(rows.qid.nunique()),
        }
    return out


def check_gbdt(fid: dict[str, dict[str, Any]], where: str) -> None:
    """A GBDT graph must score as the booster does (float32 thresholds and sums: within GBDT_CHECK)."""
    for name, f in fid.items():
        if f["max_abs_diff"] > GBDT_CHECK:
            raise DataError(
                f"{where}: the graph's scores differ from the booster's by up to {f['max_abs_diff']:.3g} on {name}'s "
                f"test rows (allowed {GBDT_CHECK}): the converter does not support this model; it is not exported"
            )


def run(cfg: DictConfig) -> dict[str, Any]:
    ec: ExportConfig = typed(cfg.export, ExportConfig, "export")
    ws = Workspace.from_cfg(cfg)
    model_dir = find_student(ws, ec.student)
    kind = tag(ec.format, ec.quantize)
    dest = ws.exports / f"{ec.student}-{kind}"
    where = f"export {ec.student}@{kind}"
    ds = load_dataset(cfg)
    checked_candidates(cfg, ws, ds)
    cands = pd.read_parquet(ws.candidates)
    ctx = Context.of(cfg, ds, ws, cands)
    module = student_module(model_dir, ctx)
    opener = load_callable(f"{module}:open_model", f"{where}: the student's module {module}")
    model = opener(model_dir)
    test = sample_rows(cands, cfg.evaluate.split, ec.fidelity_queries, None, cfg.seed)
    if test.empty:
        raise DataError(
            f"{where}: the candidates hold no {cfg.evaluate.split} query to measure the export on"
        )
    _, groups = query_groups(test, cfg.evaluate.latency_queries, cfg.evaluate.latency_candidates, cfg.seed)
    with staged_dir(dest, "export folder") as tmp:
        if isinstance(model, torch.nn.Module):
            del model
            if ec.format == "lleaves":
                raise ConfigError(
                    f"export.format=lleaves: {where} is a neural student; lleaves compiles LightGBM students "
                    f"(use export.format=onnx or openvino)"
                )
            calib = sample_rows(cands, "train", ec.calibration_queries, ec.calibration_candidates, cfg.seed)
            if calib.empty:
                raise DataError(
                    f"{where}: the candidates hold no train query to calibrate and check the graph on"
                )
            info = export_neural(model_dir, replace(ctx, cands=calib), ec, tmp, where)
        elif hasattr(model, "dump_model") or hasattr(model, "get_dump"):
            info = export_gbdt(cfg, model_dir, model, ec, tmp, where)
        else:
            raise ConfigError(
                f"{where}: {module}.open_model gives a {type(model).__name__}, which cannot be exported"
            )
        meta = {
            "student": ec.student,
            "student_dir": model_dir.relative_to(ws.root).as_posix(),
            "student_fingerprint": fingerprint.of_folder(model_dir),
            "tag": kind,
            "precision": ec.precision,
            **info,
        }
        run_ = runner(tmp, meta, ec.threads)
        meta["runtime"] = {
            "library": {"openvino": "openvino", "lleaves": "lleaves"}.get(ec.format, "onnxruntime"),
            "precision": run_.precision,
        }
        meta["fidelity"] = fidelity(
            model_dir,
            replace(ctx, cands=test),
            adapter(meta, run_),
            kind,
            ds.qrels[cfg.evaluate.split],
            groups,
        )
        if meta["kind"] == "gbdt":
            check_gbdt(meta["fidelity"], where)
        meta["machine"] = machine()
        write_json_atomic(meta, tmp / EXPORT_FILE)
    for name, f in meta["fidelity"].items():
        tau = "n/a" if f["kendall_tau"] is None else f"{f['kendall_tau']:.4f}"
        if (f["kendall_tau"] is not None and f["kendall_tau"] < MIN_KENDALL) or abs(
            f["ndcg@10_diff"]
        ) > MAX_NDCG_DROP:
            log.warning(
                "%s keeps less of the original's ranking than a deployable export should (per-query Kendall >= %s, "
                "nDCG@10 within %s): compare it in make evaluate before serving it",
                name,
                MIN_KENDALL,
                MAX_NDCG_DROP,
            )
        print(
            f"{name}: Kendall tau {tau}, nDCG@10 {f['ndcg@10']:.4f} ({f['ndcg@10_diff']:+.4f}), "
            f"{f['ms_per_query']:.1f} vs {f['ms_per_query_original']:.1f} ms/query "
            f"({f['speedup'] or float('nan'):.2f}x) on {f['queries']} {cfg.evaluate.split} queries"
        )
    print(f"export {ec.student}@{kind} -> {dest}")
    return meta


__all__ = [
    "EXPORT_FILE",
    "export_dirs",
    "export_meta",
    "export_scorers",
    "find_ranker",
    "find_student",
    "load_export",
    "run",
]
