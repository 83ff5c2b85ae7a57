"""`make features`: one row per candidate (qid, docid, split) with the configured features, vectorised.

The features come from families (`distill/features/family.py`), each one module plus one
`configs/feature/<name>.yaml`, selected as `feature@features.families: [...]` (default: every built-in family):
`bm25` (bm25, bm25_rank, bm25_title, bm25_text), `lexical` (query_len, doc_len, coverage), `freshness` (age_days,
log_age), `behaviour` (impressions, clicks, ctr, ctr_debiased, dwell_mean, last_click_rate, from the click log),
`popularity`, `translation` (click_translation, judged_translation). `features.names` picks among their
features ([] = all of them); a name no family computes is refused at start; a feature whose source is missing is
dropped with a logged reason, never filled in.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf

from distill.config import to_container, typed
from distill.data.beir import Dataset
from distill.data.prepare import dataset_dir, load_dataset
from distill.distributed import dask_client, ordered_map
from distill.errors import ConfigError, DataError
from distill.features.family import FeatureContext, FeatureFamily, load_families, with_positions
from distill.features.schema import FeatureOptions
from distill.ir import fingerprint
from distill.retrieval.candidates import candidate_splits, checked_candidates, iter_shards
from distill.stamps import Stage
from distill.workspace import Workspace, release_arrow_memory, write_json_atomic

log = logging.getLogger(__name__)


def resolve_names(names: list[str], families: list[FeatureFamily]) -> list[str]:
    """The features asked for ([] = every feature of the families); a name no family computes is refused."""
    known = [n for f in families for n in f.names]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ConfigError(f"features.names: unknown feature(s) {unknown}; the families compute {known}")
    return list(names) or known


def used_families(names: list[str], families: list[FeatureFamily]) -> list[FeatureFamily]:
    """The families that compute one of `names`, in order."""
    return [f for f in families if set(names) & set(f.names)]


def stage_dataset(cfg: DictConfig) -> Dataset:
    """The dataset, as the stage (or a Dask worker) reads it: without the corpus's texts where no family used
    reads them other than tokenised (`FeatureFamily.reads_texts`; the tokens are made from corpus.jsonl, read
    in order: `load_dataset(texts=False)`)."""
    families = load_families(cfg.features.families)
    used = used_families(resolve_names(list(cfg.features.names), families), families)
    return load_dataset(cfg, texts=any(f.reads_texts for f in used))


def prepare(
    ctx: FeatureContext, names: list[str], families: list[FeatureFamily], owns_dataset: bool = False
) -> list[FeatureFamily]:
    """Each family that computes one of `names`, prepared once; the corpus's tokens they share are let go once
    no family left reads them, and, where the caller `owns_dataset` (the stage, a Dask worker), so are the corpus's
    texts once no family reads them per chunk."""
    used = used_families(names, families)
    keep_texts = not owns_dataset or any(f.reads_texts for f in used)
    for i, fam in enumerate(used):
        fam.prepare(ctx, set(names) & set(fam.names))
        if not any(ctx.needs_tokens(later) for later in used[i + 1 :]):
            ctx.release_tokens()
            if not keep_texts:  # before the families still to prepare (the click log's aggregation) run
                ctx.release_texts()
        release_arrow_memory()  # what preparing the family freed, back to the system before the next
    ctx.release_shared()
    release_arrow_memory()
    return used


def chunk_features(
    ctx: FeatureContext, rows: pd.DataFrame, names: list[str], families: list[FeatureFamily]
) -> pd.DataFrame:
    """qid, docid, split and the features of one chunk of candidate rows (whole queries), in `names`' order."""
    feats: dict[str, np.ndarray] = {}
    rows = with_positions(ctx, rows)
    for fam in families:
        feats.update(fam.compute(ctx, rows, set(names) & set(fam.names)))
    out = rows[["qid", "docid", "split"]].reset_index(drop=True).copy()
    for n in names:
        if n in feats:
            out[n] = feats[n]
    return out


def build_features(
    ds: Dataset,
    cands: pd.DataFrame,
    names: list[str],
    options: FeatureOptions | None,
    rc: Any,
    families: list[FeatureFamily] | None = None,
) -> pd.DataFrame:
    """The features `names` ([] = every feature of the families) of candidate rows held in memory (the stage
    streams them instead, `write_features`)."""
    families = default_families() if families is None else families
    names = resolve_names(names, families)
    splits = {str(s): list(g.qid.unique()) for s, g in cands.groupby("split")}
    ctx = FeatureContext(ds, options or FeatureOptions(), rc, splits)
    out = chunk_features(ctx, cands, names, prepare(ctx, names, families))
    dropped = [n for n in names if n not in out]
    if dropped:
        log.warning("features dropped for missing sources: %s", dropped)
    return out


CANDIDATE_COLUMNS = ("qid", "docid", "rank", "bm25", "split")


def feature_chunks(
    cfg: DictConfig, ws: Workspace, ds: Dataset, splits: dict[str, list[str]]
) -> tuple[list[str], Iterator[pd.DataFrame], dict[str, float]]:
    """(the features' names, each chunk of features.parquet in order, facts on the prepared state): computed
    here, or on the Dask cluster of `features.dask` (each worker prepares the families once; the same rows either
    way). `splits`: the candidates' queries of each split (`checked_candidates`). The facts, computed here only:
    `index_bytes_per_doc`, the families' BM25 indexes per document (`FeatureFamily.index_bytes`)."""
    families = load_families(cfg.features.families)
    names = resolve_names(list(cfg.features.names), families)
    chunks = iter_shards(ws.candidates, cfg.features.chunk_rows, CANDIDATE_COLUMNS)
    if not cfg.features.dask.cluster:
        ctx = FeatureContext(
            ds,
            feature_options(cfg),
            cfg.retrieval,
            splits,
            cfg.features.chunk_rows,
            str(ws.candidates),
        )
        used = prepare(ctx, names, families, owns_dataset=True)
        facts = {"index_bytes_per_doc": round(sum(f.index_bytes() for f in used) / max(1, len(ds.corpus)), 1)}
        return names, (chunk_features(ctx, c.reset_index(drop=True), names, used) for c in chunks), facts

    def on_dask() -> Iterator[pd.DataFrame]:
        key = json.dumps(to_container(cfg), default=str)  # its own order: the families' order is the columns'
        with dask_client(cfg.features.dask, "features.dask") as client:
            window = 2 * max(1, len(client.scheduler_info()["workers"]))
            yield from ordered_map(client, features_task, chunks, window, key)

    return names, on_dask(), {}


@functools.lru_cache(maxsize=2)
def _worker_state(key: str) -> tuple[FeatureContext, list[str], list[FeatureFamily]]:
    """A Dask worker's prepared families for the config `key` (JSON), built once per worker process."""
    cfg = OmegaConf.create(json.loads(key))
    ws = Workspace(Path(cfg.paths.workspace))
    families = load_families(cfg.features.families)
    names = resolve_names(list(cfg.features.names), families)
    ctx = FeatureContext(
        stage_dataset(cfg),
        feature_options(cfg),
        cfg.retrieval,
        candidate_splits(ws.candidates),
        cfg.features.chunk_rows,
        str(ws.candidates),
    )
    return ctx, names, prepare(ctx, names, families, owns_dataset=True)


def features_task(rows: pd.DataFrame, key: str) -> pd.DataFrame:
    """One chunk's features on a Dask worker (the same rows `chunk_features` gives in this process)."""
    ctx, names, used = _worker_state(key)
    return chunk_features(ctx, rows.reset_index(drop=True), names, used)


def write_features(
    cfg: DictConfig, ws: Workspace, ds: Dataset, splits: dict[str, list[str]]
) -> dict[str, Any]:
    """features.parquet from the candidates, `features.chunk_rows` pairs (whole queries) at a time, one row group
    each, into a temp sibling renamed when whole: memory holds the families' prepared state and one chunk. Returns
    the rows, the features and `feature_chunks`' facts."""
    names, chunks, facts = feature_chunks(cfg, ws, ds, splits)
    tmp = ws.features.with_name(ws.features.name + ".tmp")
    writer: pq.ParquetWriter | None = None
    rows = 0
    columns: list[str] = []
    try:
        for df in chunks:
            table = pa.Table.from_pandas(df, preserve_index=False)
            if writer is None:
                columns = list(df.columns)
                writer = pq.ParquetWriter(tmp, table.schema)
            elif list(df.columns) != columns:
                raise RuntimeError(f"a chunk's features {list(df.columns)} differ from the first's {columns}")
            writer.write_table(table.cast(writer.schema))
            rows += len(df)
            del df, table
            release_arrow_memory()  # what the chunk's features freed, back to the system before the next
        if writer is None:
            raise DataError(f"{ws.candidates} holds no candidate: re-run `make candidates`")
        writer.close()
        os.replace(tmp, ws.features)
    except BaseException:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
    dropped = [n for n in names if n not in columns]
    if dropped:
        log.warning("features dropped for missing sources: %s", dropped)
    return {"rows": rows, "features": [c for c in columns if c not in ("qid", "docid", "split")], **facts}


def default_families() -> list[FeatureFamily]:
    """The built-in families, as configs/feature/*.yaml selects them by default."""
    from distill.features.behaviour import BehaviourFeatures
    from distill.features.bm25 import BM25Features
    from distill.features.freshness import FreshnessFeatures
    from distill.features.lexical import LexicalFeatures
    from distill.features.popularity import PopularityFeatures
    from distill.features.translation import TranslationFeatures

    return [
        BM25Features(),
        LexicalFeatures(),
        FreshnessFeatures(),
        BehaviourFeatures(),
        PopularityFeatures(),
        TranslationFeatures(),
    ]


def feature_options(cfg: DictConfig) -> FeatureOptions:
    opts: FeatureOptions = typed(cfg.features.options, FeatureOptions, "features.options")
    return opts


def features_record(cfg: DictConfig, ws: Workspace) -> dict[str, Any]:
    """What features.parquet is built from: the retrieval and feature options (stacked students are joined
    later, not part of it), the candidates and the dataset (texts, timestamps, click log), by content."""
    ws.require(ws.candidates, "candidates")
    return STAGE.record(cfg, ws)


def stale_features(cfg: DictConfig, ws: Workspace) -> list[str]:
    """What changed since features.parquet was built (empty: it is fresh)."""
    if not ws.features.is_file():
        return ["features.parquet"]
    try:
        recorded = json.loads(ws.features_record.read_text())
    except (OSError, ValueError):
        recorded = None
    return fingerprint.stale(recorded, features_record(cfg, ws))


def run(cfg: DictConfig) -> dict[str, Any]:
    ws = Workspace.from_cfg(cfg)
    t0 = time.perf_counter()
    ds = stage_dataset(cfg)
    out = write_features(cfg, ws, ds, checked_candidates(cfg, ws, ds))
    # the options themselves too: an export's features.json says how each feature was computed
    options = {"retrieval": fingerprint.plain(cfg.retrieval), "features": STAGE.config(cfg)[1]}
    # and the facts of the run that built it (the size of the BM25 indexes it held, which the scale bench reads)
    facts = {k: out[k] for k in ("index_bytes_per_doc",) if k in out}
    write_json_atomic(features_record(cfg, ws) | {"options": options} | facts, ws.features_record)
    print(
        f"features: {out['rows']} rows x {len(out['features'])} features ({', '.join(out['features'])}) in "
        f"{time.perf_counter() - t0:.1f}s -> {ws.features}"
        + (
            f" (BM25 indexes {facts['index_bytes_per_doc']} bytes per document)"
            if facts.get("index_bytes_per_doc")
            else ""
        )
    )
    return out


STAGE = Stage(
    name=lambda cfg: "features",
    run=run,
    config=lambda cfg: [
        cfg.retrieval,
        {k: v for k, v in to_container(cfg.features).items() if k != "students"},
    ],
    inputs=lambda cfg, ws: {"candidates": ws.candidates, "dataset": dataset_dir(cfg)},
    outputs=lambda cfg, ws: [ws.features],
)
