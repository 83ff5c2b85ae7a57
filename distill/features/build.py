"""`make features`: one row per candidate (qid, docid, split) with the configured features, vectorised.

Feature families (names for `features.names`):

- BM25: `bm25`, `bm25_rank` (from candidates.parquet); `bm25_title`, `bm25_text` (per-field BM25 of the pair).
- Lengths: `query_len`, `doc_len` (tokens after BM25 tokenisation); `coverage` (share of query terms in the doc).
- Freshness: `age_days` (query time - document time), `log_age`. Without a query timestamp the reference time is
  `features.options.reference_time` or, failing that, the newest document; without document timestamps the
  freshness features are dropped (logged).
- Behaviour, from `logs/impressions.parquet`: `impressions`, `clicks`, `ctr` (Bayesian-smoothed towards the
  global CTR with `ctr_prior_weight` pseudo-impressions), `ctr_debiased` (clicks over the summed examination
  propensities of the impressions; propensities per position estimated from the log as CTR(position)/CTR(1),
  or `propensities` when configured), `dwell_mean`, `last_click_rate`. No leakage: only log rows older than the
  cut-off (`click_cutoff`, default the earliest test-query timestamp) are used; without timestamps, only rows of
  train-split queries.
- Popularity: `popularity` (log1p of the corpus field, e.g. CACM citations) where the data has it.

A feature whose source is missing is dropped with a logged reason; nothing is filled in silently.
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
from distill.features.schema import ALL_FEATURES, FeatureOptions
from distill.ir import fingerprint
from distill.ir.bm25 import BM25Index, pair_dots
from distill.ir.timestamps import parse_timestamps
from distill.stamps import Stage
from distill.workspace import Workspace, write_json_atomic, write_parquet_atomic

log = logging.getLogger(__name__)


def _lexical(ds: Dataset, cands: pd.DataFrame, rc: Any, names: set[str]) -> dict[str, np.ndarray]:
    feats: dict[str, np.ndarray] = {}
    docids = ds.corpus.index
    qids = pd.Index(cands.qid.unique())
    q_idx = qids.get_indexer(cands.qid)
    d_idx = docids.get_indexer(cands.docid)
    qtexts = ds.queries.loc[qids, "text"].tolist()
    kw = dict(
        k1=rc.k1, b=rc.b, method=rc.method, stemmer=rc.stemmer, stopwords=rc.stopwords, lowercase=rc.lowercase
    )
    doc_texts = ds.doc_texts(docids, rc.fields)
    full = BM25Index(doc_texts, **kw)
    if names & {"query_len", "doc_len", "coverage"}:
        q_tokens = full.tokenize(qtexts, ids=False)
        doc_tokens = full.tokenize(doc_texts, ids=False)
        doc_len = np.array([len(t) for t in doc_tokens], dtype=np.float32)
        qlen = np.array([len(set(t)) for t in q_tokens], dtype=np.float32)
        feats["query_len"] = qlen[q_idx].astype(np.float32)
        feats["doc_len"] = doc_len[d_idx]
        if "coverage" in names:
            Q, D = full.term_matrix(q_tokens, binary=True), full.term_matrix(doc_tokens, binary=True)
            del doc_tokens
            hits = pair_dots(Q, D, q_idx, d_idx)
            feats["coverage"] = (hits / np.maximum(qlen[q_idx], 1)).astype(np.float32)
    for field in ("title", "text"):
        name = f"bm25_{field}"
        if name not in names:
            continue
        col = ds.corpus.get(field)
        if col is None or not col.fillna("").str.strip().astype(bool).any():
            log.info("feature %s dropped: the corpus has no %r field", name, field)
            continue
        idx = BM25Index(ds.doc_texts(docids, [field]), **kw)
        feats[name] = idx.score_pairs(qtexts, q_idx, d_idx)
    return feats


def _freshness(ds: Dataset, cands: pd.DataFrame, opts: FeatureOptions) -> dict[str, np.ndarray]:
    doc_ts = ds.corpus["timestamp"]
    if doc_ts.isna().all():
        log.info("features age_days, log_age dropped: no document has a timestamp")
        return {}
    ref = parse_timestamps([opts.reference_time]).iloc[0] if opts.reference_time else doc_ts.max()
    q_ts = ds.queries["timestamp"].reindex(cands.qid).fillna(ref).reset_index(drop=True)
    d_ts = doc_ts.reindex(cands.docid).reset_index(drop=True)
    # Series arithmetic stays vectorised; tz-aware timestamps via to_numpy() would be one object per row
    age = np.asarray((q_ts - d_ts).to_numpy() / np.timedelta64(1, "D"), dtype=np.float64)
    return {"age_days": age.astype(np.float32), "log_age": np.log1p(np.clip(age, 0, None)).astype(np.float32)}


def click_cutoff(ds: Dataset, opts: FeatureOptions, splits: dict[str, list[str]]) -> pd.Timestamp | None:
    if opts.click_cutoff:
        return parse_timestamps([opts.click_cutoff]).iloc[0]
    test = splits.get("test")
    if test is not None and ds.queries["timestamp"].reindex(test).notna().all():
        return ds.queries["timestamp"].reindex(test).min()
    return None


def behaviour(
    ds: Dataset, cands: pd.DataFrame, opts: FeatureOptions, cutoff: pd.Timestamp | None, train_qids: list[str]
) -> dict[str, np.ndarray]:
    log_df = ds.clicks
    if log_df is None or log_df.empty:
        log.info("behaviour features dropped: the dataset has no click log (logs/impressions.parquet)")
        return {}
    if cutoff is not None:
        used = log_df[log_df.timestamp < cutoff]
        log.info("click log: %d of %d rows before the cut-off %s are used", len(used), len(log_df), cutoff)
    else:
        used = log_df[log_df.qid.isin(train_qids)]
        log.info("click log: no cut-off time; only the %d rows of train queries are used", len(used))
    pos = used.position.to_numpy()
    clicked = used.clicked.to_numpy()
    if opts.propensities:
        prop_table = np.asarray(opts.propensities, dtype=np.float64)
    else:
        ctr_pos = pd.Series(clicked).groupby(pos).mean()
        prop_table = np.zeros(int(pos.max()) + 1) if len(pos) else np.zeros(1)
        prop_table[ctr_pos.index.to_numpy()] = (ctr_pos / max(ctr_pos.get(1, ctr_pos.max()), 1e-9)).to_numpy()
    prop = prop_table[np.clip(pos, 0, len(prop_table) - 1)]
    prior = float(clicked.mean()) if len(clicked) else 0.0
    # the last click of each session
    last = np.zeros(len(used), dtype=bool)
    if "session" in used and clicked.any():
        cl = used[used.clicked]
        last_idx = cl.groupby("session").position.idxmax()
        last[used.index.get_indexer(last_idx.to_numpy())] = True
    agg = pd.DataFrame(
        {
            "qid": used.qid.to_numpy(),
            "docid": used.docid.to_numpy(),
            "impr": 1.0,
            "click": clicked.astype(float),
            "prop": prop,
            "dwell": np.where(clicked, used.dwell_s.to_numpy(), np.nan),
            "last": last.astype(float),
        }
    )
    g = agg.groupby(["qid", "docid"]).agg(
        impr=("impr", "sum"),
        click=("click", "sum"),
        prop=("prop", "sum"),
        dwell=("dwell", "mean"),
        last=("last", "sum"),
    )
    g = g.reindex(pd.MultiIndex.from_arrays([cands.qid.astype(str), cands.docid.astype(str)]))
    impr = g.impr.fillna(0).to_numpy()
    clicks = g.click.fillna(0).to_numpy()
    w = float(opts.ctr_prior_weight)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "impressions": impr.astype(np.float32),
            "clicks": clicks.astype(np.float32),
            "ctr": ((clicks + w * prior) / (impr + w)).astype(np.float32),
            "ctr_debiased": np.where(g.prop.fillna(0) > 0, clicks / g.prop.to_numpy(), np.nan).astype(
                np.float32
            ),
            "dwell_mean": g.dwell.to_numpy().astype(np.float32),
            "last_click_rate": np.where(
                clicks > 0, g["last"].fillna(0).to_numpy() / np.maximum(clicks, 1), np.nan
            ).astype(np.float32),
        }


def build_features(
    ds: Dataset, cands: pd.DataFrame, names: list[str], options: FeatureOptions | None, rc: Any
) -> pd.DataFrame:
    unknown = sorted(set(names) - set(ALL_FEATURES))
    if unknown:
        raise ConfigError(f"features.names: unknown feature(s) {unknown}; known: {ALL_FEATURES}")
    opts = options or FeatureOptions()
    want = set(names)
    feats: dict[str, np.ndarray] = {}
    if "bm25" in want:
        feats["bm25"] = cands.bm25.to_numpy(np.float32)
    if "bm25_rank" in want:
        feats["bm25_rank"] = cands["rank"].to_numpy(np.float32)
    feats.update(_lexical(ds, cands, rc, want))
    if want & {"age_days", "log_age"}:
        feats.update(_freshness(ds, cands, opts))
    splits = {s: list(g.qid.unique()) for s, g in cands.groupby("split")}
    if want & {"impressions", "clicks", "ctr", "ctr_debiased", "dwell_mean", "last_click_rate"}:
        feats.update(behaviour(ds, cands, opts, click_cutoff(ds, opts, splits), splits.get("train", [])))
    if "popularity" in want:
        if "popularity" in ds.corpus:
            feats["popularity"] = np.log1p(
                ds.corpus.popularity.reindex(cands.docid).astype(float).clip(lower=0)
            ).to_numpy(np.float32)
        else:
            log.info("feature popularity dropped: the corpus has no 'popularity' field")
    kept = [n for n in names if n in feats]
    dropped = [n for n in names if n not in feats]
    if dropped:
        log.warning("features dropped for missing sources: %s", dropped)
    out = cands[["qid", "docid", "split"]].reset_index(drop=True).copy()
    for n in kept:
        out[n] = feats[n]
    return out


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
    df = build_features(ds, cands, list(cfg.features.names), feature_options(cfg), cfg.retrieval)
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
