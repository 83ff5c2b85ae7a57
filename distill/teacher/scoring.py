"""`make teacher-score`: score candidates.parquet with the teacher(s) into resumable, crash-safe shards.

Shards are consecutive candidate rows, about `teacher.shard_size` pairs each and always ending at a query
boundary (so per-query ensemble normalisation stays inside a shard). Each shard is written to a temp file,
fsynced and renamed; the manifest records finished shards with their checksum. A re-run skips finished
shards, deletes temp files, re-validates parts the manifest does not list (e.g. after a kill between the
rename and the manifest update) and redoes truncated or corrupted ones, so the result is exactly that of an
uninterrupted run. Resuming with another teacher, revision, max_length or dtype is refused.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from omegaconf import DictConfig
from tqdm.auto import tqdm

from distill.config import to_container
from distill.data.beir import Dataset
from distill.data.prepare import dataset_dir, load_dataset
from distill.distributed import process_ranks
from distill.errors import DataError, DistillError, StageNotReadyError
from distill.faults import kill_point
from distill.ir import fingerprint
from distill.retrieval.candidates import checked_candidates, iter_shards
from distill.stamps import Stage
from distill.teacher.calibration import calibration_sample, check_precision
from distill.teacher.engine import engine_for
from distill.teacher.ensemble import combine
from distill.teacher.model import TeacherModel, load_teacher
from distill.teacher.soft_labels import (
    SCHEMA_VERSION,
    part_identity,
    part_name,
    read_manifest,
    update_manifest,
    write_manifest,
    write_part,
)
from distill.tracking import start_run
from distill.workspace import Workspace, check_complete, check_not_linked_out

log = logging.getLogger(__name__)


def teacher_names(cfg: DictConfig) -> list[str]:
    return list(cfg.teacher.ensemble) or [cfg.teacher.model]


def resolve_teacher(name: str, ws: Workspace) -> str:
    """ "trained" -> the workspace's trained teacher folder (which must exist)."""
    if name != "trained":
        return name
    path = ws.model("teacher")
    if not path.exists():
        raise StageNotReadyError(
            f"teacher.model=trained but {path} has no model: run `make train-teacher` "
            f"first, or set teacher.model=HUB_ID_OR_FOLDER"
        )
    return str(check_complete(path, "re-run `make train-teacher` (or set teacher.model=HUB_ID_OR_FOLDER)"))


def column_name(name: str) -> str:
    return "score_" + re.sub(r"[^0-9A-Za-z]+", "_", Path(name).name if Path(name).exists() else name).strip(
        "_"
    )


def dedupe(shard: pd.DataFrame, where: str) -> tuple[pd.DataFrame, int]:
    dup = shard.duplicated(["qid", "docid"])
    if dup.any():
        first = shard[dup].iloc[0]
        log.warning(
            "%s: dropped %d duplicate (qid, docid) pair(s), first (%s, %s) at row %d",
            where,
            int(dup.sum()),
            first.qid,
            first.docid,
            int(shard.index[dup][0]) + 1,
        )
    return shard[~dup], int(dup.sum())


def texts_for(ds: Dataset, shard: pd.DataFrame, where: str) -> tuple[list[str], list[str]]:
    unknown_q = ~shard.qid.isin(ds.queries.index)
    unknown_d = ~shard.docid.isin(ds.corpus.index)
    for mask, col, src in ((unknown_q, "qid", "queries.jsonl"), (unknown_d, "docid", "corpus.jsonl")):
        if mask.any():
            i = shard.index[mask.to_numpy()][0]
            raise DataError(
                f"{where}: row {i + 1}: {col} {shard.loc[i, col]!r} is not in {src} of dataset "
                f"{ds.name!r}; candidates and dataset do not match (re-run `make candidates`)"
            )
    return ds.queries.loc[shard.qid, "text"].tolist(), ds.doc_texts(shard.docid)


class TeacherScorer:
    """Scores shards with one or more teachers and writes the soft-label parts."""

    def __init__(self, models: list[TeacherModel], cfg: DictConfig):
        self.models = models
        self.engines = [engine_for(m, cfg.teacher) for m in models]
        self.norm = cfg.teacher.ensemble_norm
        self.columns = [column_name(m.name) for m in models]

    def score(self, shard: pd.DataFrame, queries: list[str], docs: list[str], progress=None) -> pd.DataFrame:
        out = pd.DataFrame({"qid": shard.qid.to_numpy(), "docid": shard.docid.to_numpy()}).astype(
            {"qid": "string", "docid": "string"}
        )
        raw = [e.score(queries, docs, progress=progress) for e in self.engines]
        if len(raw) == 1:
            out["score"] = raw[0]
        else:
            for col, r in zip(self.columns, raw, strict=True):
                out[col] = r
            out["score"] = combine(raw, out.qid, self.norm)
        return out


def identity_of(cfg: DictConfig, models: list[TeacherModel], candidates: Path) -> dict[str, Any]:
    return {
        "teachers": [m.describe() for m in models],
        "max_length": models[0].max_length,
        "dtype": models[0].dtype,
        "ensemble_norm": cfg.teacher.ensemble_norm if len(models) > 1 else None,
        "shard_size": int(cfg.teacher.shard_size),
        "candidates": {
            "rows": pq.ParquetFile(candidates).metadata.num_rows,
            "sha256": fingerprint.of_file(candidates),
        },
        # the texts scored, by content: a workspace or dataset moved elsewhere keeps its identity
        "dataset": fingerprint.of_folder(dataset_dir(cfg), ("corpus.jsonl", "queries.jsonl")),
    }


def describe(identity: dict[str, Any]) -> str:
    t = ", ".join(
        f"{x['id']}@{x['revision']}" + (f" prompt {x['prompt']!r}" if x.get("prompt") else "")
        for x in identity["teachers"]
    )
    return f"teacher {t}, max_length {identity['max_length']}, dtype {identity['dtype']}"


def our_parts(root: Path) -> list[Path]:
    """The part files of this folder the project wrote: plain files named part-NNNNN.parquet that carry the
    soft-label metadata (a file of the same name without it is someone else's and is left alone)."""
    return [
        p
        for p in sorted(root.glob("part-*.parquet"))
        if re.fullmatch(r"part-\d{5}\.parquet", p.name)
        and not p.is_symlink()
        and part_identity(p) is not None
    ]


def own_temp_files(root: Path) -> list[Path]:
    """The temp files a scoring run writes (a part's or the manifest's, renamed into place when complete)."""
    return [
        p
        for p in root.glob("*.tmp")
        if (re.fullmatch(r"part-\d{5}\.parquet\.tmp", p.name) or p.name == "manifest.json.tmp")
        and not p.is_symlink()
    ]


def prepare_dir(root: Path, identity: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    """The manifest to resume from (a fresh one when starting over); refuses a mismatching earlier run. Only the
    project's own files are deleted (its parts, manifest and temp files), never through a link out of the
    workspace."""
    check_not_linked_out(root, root.parent, "soft_labels/")
    if overwrite and root.is_dir():  # only what a scoring run writes: nothing else in the folder is touched
        for f in [*our_parts(root), root / "manifest.json", root / "manifest.lock"]:
            if not f.is_symlink():
                f.unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    for tmp in own_temp_files(root):
        tmp.unlink()
    manifest = read_manifest(root)
    parts = sorted(root.glob("part-*.parquet"))
    if manifest is None and (root / "manifest.json").exists():
        log.warning("%s/manifest.json is unreadable: rebuilding it from the parts on disk", root)
    old = (
        manifest["identity"]
        if manifest
        else next((i for p in parts if (i := part_identity(p)) is not None), None)
    )
    if old is not None:
        old = {k: v for k, v in old.items() if k not in ("created", "schema_version")}
        if old != identity:
            raise DistillError(
                f"{root} holds soft labels from another run ({describe(old)}; now {describe(identity)}"
                f"{'' if old.get('dataset') == identity['dataset'] else '; the dataset texts changed'}"
                f"{'' if old.get('candidates') == identity['candidates'] else '; candidates changed'}). To start "
                f"fresh: teacher.overwrite=true (or delete {root}), or write elsewhere with paths.workspace=DIR"
            )
    if manifest is None:
        manifest = {"schema_version": SCHEMA_VERSION, "identity": identity, "shards": {}, "complete": False}
    return manifest


def shard_is_done(root: Path, manifest: dict[str, Any], i: int, shard: pd.DataFrame, identity: dict) -> bool:
    """A shard counts as done when its part matches the manifest checksum, or (not yet listed) when the part
    on disk holds exactly this shard's pairs, with this run's identity and finite scores; such a part is then
    recorded in the manifest."""
    f = root / part_name(i)
    entry = manifest["shards"].get(f"{i:05d}")
    if not f.is_file():
        return False
    if entry is not None and entry.get("sha256") == fingerprint.sha256_of_file(f):
        return True
    ident = part_identity(f)
    if (
        ident is None
        or {k: v for k, v in ident.items() if k not in ("created", "schema_version")} != identity
    ):
        return False
    try:
        df = pd.read_parquet(f)
    except Exception:
        return False
    ok = (
        len(df) == len(shard)
        and (df.qid.to_numpy() == shard.qid.to_numpy()).all()
        and (df.docid.to_numpy() == shard.docid.to_numpy()).all()
        and np.isfinite(df.score.to_numpy()).all()
    )
    if ok:
        record_shard(
            root, manifest, i, {"file": f.name, "rows": len(df), "sha256": fingerprint.sha256_of_file(f)}
        )
    return bool(ok)


def record_shard(root: Path, manifest: dict[str, Any], i: int, entry: dict[str, Any]) -> None:
    """Add a finished shard to the manifest on disk (shared by all ranks) and to this process's copy."""
    manifest["shards"][f"{i:05d}"] = entry
    update_manifest(root, lambda m: m["shards"].__setitem__(f"{i:05d}", entry), manifest)


def configured_prompt(t: Any) -> str | None:
    """`teacher.prompt`, or the text of `teacher.prompt_file` (surrounding whitespace stripped)."""
    if not t.get("prompt_file"):
        return t.prompt
    path = Path(t.prompt_file)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"teacher.prompt_file={path}: cannot read it ({e}); give a UTF-8 text file") from e
    if not text:
        raise DataError(f"teacher.prompt_file={path} is empty; write the instruction in it")
    return text


def load_configured_teacher(
    cfg: DictConfig, name: str, device: str, dtype: str | None = None, calibrated: bool = False
) -> TeacherModel:
    """`load_teacher` with the `teacher.*` options of `cfg` (`dtype` overrides teacher.dtype; `calibrated`: the
    caller calibrates an int8 teacher on its pairs, so `auto` may choose it)."""
    t = cfg.teacher
    return load_teacher(
        name,
        revision=t.revision,
        max_length=t.max_length,
        dtype=dtype or t.dtype,
        device=device,
        compile=bool(t.compile),
        prompt=configured_prompt(t),
        trust_remote_code=bool(t.trust_remote_code),
        allow_untrained_head=bool(t.allow_untrained_head),
        calibrated=calibrated,
    )


def load_teachers(cfg: DictConfig, ws: Workspace, device: str) -> list[TeacherModel]:
    calibrated = bool(cfg.teacher.calibration_pairs)  # the job calibrates int8 on its own pairs
    return [
        load_configured_teacher(cfg, resolve_teacher(n, ws), device, calibrated=calibrated)
        for n in teacher_names(cfg)
    ]


def score_all_shards(cfg: DictConfig, ds: Dataset, ws: Workspace, tracker=None) -> dict[str, Any]:
    """Score every candidate pair not yet done. Under `accelerate launch` / `torchrun` with N processes, rank r
    scores shards r, r+N, r+2N, ... and all ranks record into the one manifest; rank 0 prepares the folder
    first and finishes it last (stray parts removed, `complete`, summary over all ranks)."""
    with contextlib.ExitStack() as stack:
        ranks = process_ranks()
        checked_candidates(cfg, ws, ds)
        cand_path = ws.candidates
        models = load_teachers(cfg, ws, ranks.device(cfg.teacher.device))
        if cfg.teacher.num_threads:
            import torch

            torch.set_num_threads(int(cfg.teacher.num_threads))
        calibration: dict[str, Any] = {}
        if cfg.teacher.calibration_pairs and any(m.dtype != "fp32" for m in models):
            sample = calibration_sample(cand_path, int(cfg.teacher.calibration_pairs))
            dev = ranks.device(cfg.teacher.device)
            # int8 graphs live in the workspace while the job runs (OpenVINO maps their weights)
            graphs = stack.enter_context(tempfile.TemporaryDirectory(prefix=".teacher-int8-", dir=ws.root))
            models, calibration = check_precision(
                models,
                ds,
                sample,
                cfg.teacher,
                lambda n: load_configured_teacher(cfg, n, dev, "fp32"),
                cfg.teacher.dtype,
                Path(graphs),
            )
        identity = identity_of(cfg, models, cand_path)
        manifest = open_manifest(ws.soft_labels, identity, bool(cfg.teacher.overwrite), ranks)
        if calibration and ranks.is_main:
            update_manifest(ws.soft_labels, lambda m: m.__setitem__("calibration", calibration), manifest)
        t0 = time.perf_counter()
        scorer = TeacherScorer(models, cfg)
        mine, keep = score_my_shards(
            scorer, cfg, ds, cand_path, ws.soft_labels, manifest, identity, ranks, tracker
        )
        mine["seconds"] = round(time.perf_counter() - t0, 2)
        update_manifest(
            ws.soft_labels, lambda m: m.setdefault("ranks", {}).__setitem__(str(ranks.rank), mine), manifest
        )
        ranks.barrier()
        if not ranks.is_main:
            return {"rank": ranks.rank, **mine}
        total = identity["candidates"]["rows"]
        return finish_run(ws.soft_labels, manifest, keep, total, time.perf_counter() - t0, ranks.world)


def open_manifest(root: Path, identity: dict[str, Any], overwrite: bool, ranks: Any) -> dict[str, Any]:
    """Rank 0 prepares the folder (refusing another run's labels) and marks the run as started; every rank then
    reads the one manifest."""
    if ranks.is_main:
        manifest = prepare_dir(root, identity, overwrite)
        manifest.update(complete=False, ranks={})
        manifest.pop("summary", None)
        write_manifest(root, manifest)
    ranks.barrier()
    if ranks.is_main:
        return manifest
    shared = read_manifest(root)
    if shared is None:
        raise DistillError(f"{root}/manifest.json is unreadable on rank {ranks.rank} after rank 0 wrote it")
    return shared


def score_my_shards(
    scorer: TeacherScorer,
    cfg: DictConfig,
    ds: Dataset,
    cand_path: Path,
    root: Path,
    manifest: dict[str, Any],
    identity: dict[str, Any],
    ranks: Any,
    tracker: Any,
) -> tuple[dict[str, Any], set[str]]:
    """Score this rank's shards that are not done yet, each written crash-safely and recorded in the manifest.
    Returns this rank's counts and the part names the run keeps (every shard's, whichever rank scores it)."""
    scored = skipped = dropped = 0
    keep = set()
    desc = "teacher-score" if ranks.world == 1 else f"teacher-score rank {ranks.rank}/{ranks.world}"
    total = identity["candidates"]["rows"] if ranks.world == 1 else None
    with tqdm(
        total=total, unit="pair", desc=desc, dynamic_ncols=True, mininterval=1.0, position=ranks.rank
    ) as bar:
        for i, shard in enumerate(iter_shards(cand_path, int(cfg.teacher.shard_size))):
            keep.add(part_name(i))
            if i % ranks.world != ranks.rank:
                continue
            shard, n_dup = dedupe(shard, str(cand_path))
            dropped += n_dup
            if shard_is_done(root, manifest, i, shard, identity):
                skipped += len(shard)
                bar.update(len(shard) + n_dup)
                continue
            queries, docs = texts_for(ds, shard, str(cand_path))
            out = scorer.score(shard, queries, docs, progress=bar)
            bar.update(n_dup)
            sha = write_part(out, root / part_name(i), identity)
            entry = {"file": part_name(i), "rows": len(out), "sha256": sha, "duplicates_dropped": n_dup}
            record_shard(root, manifest, i, entry)
            kill_point("after_manifest")
            scored += len(out)
            if tracker is not None:
                tracker.log(
                    {
                        "teacher_score/pairs_per_s": scorer.engines[0].stats.pairs_per_s,
                        "teacher_score/shards_done": len(manifest["shards"]),
                    }
                )
    stats = scorer.engines[0].stats
    mine = {
        "scored": scored,
        "skipped": skipped,
        "duplicates_dropped": dropped,
        "real_tokens": stats.real_tokens,
        "padded_tokens": stats.padded_tokens,
        "oom_retries": stats.oom_retries,
    }
    return mine, keep


def finish_run(
    root: Path, manifest: dict[str, Any], keep: set[str], total: int, seconds: float, world: int
) -> dict[str, Any]:
    """Rank 0, after every rank: remove parts of no shard, mark the manifest complete, sum the ranks' counts."""
    for stray in our_parts(root):
        if stray.name not in keep:
            stray.unlink()

    def finish(m: dict[str, Any]) -> None:
        m["shards"] = {k: v for k, v in m["shards"].items() if v["file"] in keep}
        m["complete"] = True
        per = list(m.get("ranks", {}).values())
        real, padded = sum(r["real_tokens"] for r in per), sum(r["padded_tokens"] for r in per)
        done = sum(r["scored"] for r in per)
        m["summary"] = {
            "pairs": total,
            "scored": done,
            "skipped": sum(r["skipped"] for r in per),
            "duplicates_dropped": sum(r["duplicates_dropped"] for r in per),
            "seconds": round(seconds, 2),
            "pairs_per_s": round(done / seconds, 1) if seconds else 0,
            "padding_overhead": round(1 - real / padded, 4) if padded else 0.0,
            "oom_retries": sum(r["oom_retries"] for r in per),
            "shards": len(m["shards"]),
            "processes": world,
        }

    return update_manifest(root, finish, manifest)["summary"]


def run(cfg: DictConfig) -> dict[str, Any]:
    ws = Workspace.from_cfg(cfg)
    with start_run(cfg, stage="teacher-score") as tracker:
        ds = load_dataset(cfg)
        s = score_all_shards(cfg, ds, ws, tracker)
        if not process_ranks().is_main:  # the run's summary belongs to rank 0
            return s
        tracker.summary({f"teacher_score/{k}": v for k, v in s.items()})
        tracker.artifact(ws.soft_labels / "manifest.json", type="soft-labels-manifest")
    print(
        f"teacher-score: {s['pairs']} pairs ({s['scored']} scored, {s['skipped']} already done) in "
        f"{s['seconds']:.1f}s by {s['processes']} process(es), {s['pairs_per_s']:.1f} pairs/s, padding overhead "
        f"{100 * s['padding_overhead']:.1f}%, {s['duplicates_dropped']} duplicate pairs dropped -> {ws.soft_labels}"
    )
    return s


def _score_config(cfg: DictConfig) -> list[Any]:
    """The options that decide the scores (`overwrite` and `train.*` do not)."""
    return [{k: v for k, v in to_container(cfg.teacher).items() if k not in ("train", "overwrite")}]


def _score_inputs(cfg: DictConfig, ws: Workspace) -> dict[str, Path]:
    out = {"candidates": ws.candidates, "dataset": dataset_dir(cfg)}
    out |= {
        f"teacher:{n}": Path(resolve_teacher(n, ws))
        for n in teacher_names(cfg)
        if Path(resolve_teacher(n, ws)).exists()
    }
    return out


STAGE = Stage(
    name=lambda cfg: "teacher-score",
    run=run,
    config=_score_config,
    inputs=_score_inputs,
    outputs=lambda cfg, ws: [ws.soft_labels / "manifest.json"],
)
