"""`make features`: one row per candidate (qid, docid, split) with the configured features, vectorised.

The features come from families (`distill/features/family.py`), each one module plus one
`configs/feature/<name>.yaml`, selected as `feature@features.families: [...]` (default: every built-in family):
`bm25` (bm25, bm25_rank, bm25_title, bm25_text), `lexical` (query_len, doc_len, coverage), `freshness` (age_days,
log_age), `behaviour` (impressions, clicks, ctr, ctr_debiased, dwell_mean, last_click_rate, from the click log),
`popularity`. `features.names` picks among their features ([] = all of them); a name no family computes is
refused at start; a feature whose source is missing is dropped with a logged reason, never filled in.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from distill.config import to_container
from distill.data.beir import Dataset
from distill.data.prepare import dataset_dir, load_dataset
from distill.errors import ConfigError
from distill.features.family import FeatureContext, FeatureFamily, load_families
from distill.features.schema import FeatureOptions
from distill.ir import fingerprint
from distill.stamps import Stage
from distill.workspace import Workspace, write_json_atomic, write_parquet_atomic

log = logging.getLogger(__name__)


def build_features(
    ds: Dataset,
    cands: pd.DataFrame,
    names: list[str],
    options: FeatureOptions | None,
    rc: Any,
    families: list[FeatureFamily] | None = None,
) -> pd.DataFrame:
    """The features `names` ([] = every feature of the families) of every candidate row, family by family."""
    families = default_families() if families is None else families
    known = [n for f in families for n in f.names]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ConfigError(f"features.names: unknown feature(s) {unknown}; the families compute {known}")
    names = list(names) or known
    ctx = FeatureContext(ds, cands, options or FeatureOptions(), rc)
    feats: dict[str, np.ndarray] = {}
    for fam in families:
        wanted = set(names) & set(fam.names)
        if wanted:
            feats.update(fam.compute(ctx, wanted))
    kept = [n for n in names if n in feats]
    dropped = [n for n in names if n not in feats]
    if dropped:
        log.warning("features dropped for missing sources: %s", dropped)
    out = cands[["qid", "docid", "split"]].reset_index(drop=True).copy()
    for n in kept:
        out[n] = feats[n]
    return out


def default_families() -> list[FeatureFamily]:
    """The built-in families, as configs/feature/*.yaml selects them by default."""
    from distill.features.behaviour import BehaviourFeatures
    from distill.features.bm25 import BM25Features
    from distill.features.freshness import FreshnessFeatures
    from distill.features.lexical import LexicalFeatures
    from distill.features.popularity import PopularityFeatures

    return [BM25Features(), LexicalFeatures(), FreshnessFeatures(), BehaviourFeatures(), PopularityFeatures()]


def feature_options(cfg: DictConfig) -> FeatureOptions:
    opts = OmegaConf.to_object(cfg.features.options)
    assert isinstance(opts, FeatureOptions)  # the features_schema types it
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


def run(cfg: DictConfig) -> pd.DataFrame:
    ws = Workspace.from_cfg(cfg)
    t0 = time.perf_counter()
    ds = load_dataset(cfg)
    cands = pd.read_parquet(ws.require(ws.candidates, "candidates"))
    families = load_families(cfg.features.families)
    df = build_features(ds, cands, list(cfg.features.names), feature_options(cfg), cfg.retrieval, families)
    df.attrs = {}
    write_parquet_atomic(df, ws.features)
    write_json_atomic(features_record(cfg, ws), ws.features_record)
    cols = [c for c in df.columns if c not in ("qid", "docid", "split")]
    print(
        f"features: {len(df)} rows x {len(cols)} features ({', '.join(cols)}) in "
        f"{time.perf_counter() - t0:.1f}s -> {ws.features}"
    )
    return df


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
