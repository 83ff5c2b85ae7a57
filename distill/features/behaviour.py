"""Behaviour features from the click log (`logs/impressions.parquet`): `impressions`, `clicks`, `ctr`
(Bayesian-smoothed towards the global CTR with `features.options.ctr_prior_weight` pseudo-impressions),
`ctr_debiased` (clicks over the summed examination propensities of the impressions; propensities per position
estimated from the log as CTR(position)/CTR(1), or `features.options.propensities`), `dwell_mean`,
`last_click_rate`. No leakage: only log rows older than the cut-off (`features.options.click_cutoff`, default the
earliest test-query timestamp) are used; without timestamps, only rows of train-split queries. Without a click log
the family is dropped (logged)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from distill.data.beir import Dataset
from distill.features.family import FeatureContext, FeatureFamily
from distill.features.schema import FeatureOptions
from distill.ir.timestamps import parse_timestamps

log = logging.getLogger(__name__)


class BehaviourFeatures(FeatureFamily):
    names = ("impressions", "clicks", "ctr", "ctr_debiased", "dwell_mean", "last_click_rate")
    about = {
        "impressions": "times the (query, document) pair was shown in the click log before the cut-off",
        "clicks": "clicks on the pair in the click log before the cut-off",
        "ctr": "clicks / impressions, smoothed towards the global CTR (features.options.ctr_prior_weight)",
        "ctr_debiased": "clicks over the summed examination propensities of the pair's impressions",
        "dwell_mean": "mean dwell time of the pair's clicks, seconds",
        "last_click_rate": "share of the pair's clicks that were a session's last click",
    }

    def prepare(self, ctx: FeatureContext, wanted: set[str]) -> None:
        """The log aggregated per (query, document), before the cut-off: the log's size, not the candidates'."""
        cutoff = click_cutoff(ctx.ds, ctx.opts, ctx.splits)
        self.table = aggregate(ctx.ds, ctx.opts, cutoff, ctx.splits.get("train", []))

    def compute(self, ctx: FeatureContext, rows: pd.DataFrame, wanted: set[str]) -> dict[str, np.ndarray]:
        if self.table is None:
            return {}
        return {k: v for k, v in lookup(self.table, rows, ctx.opts).items() if k in wanted}


def click_cutoff(ds: Dataset, opts: FeatureOptions, splits: dict[str, list[str]]) -> pd.Timestamp | None:
    if opts.click_cutoff:
        return parse_timestamps([opts.click_cutoff]).iloc[0]
    test = splits.get("test")
    if test is not None and ds.queries["timestamp"].reindex(test).notna().all():
        return ds.queries["timestamp"].reindex(test).min()
    return None


def aggregate(
    ds: Dataset, opts: FeatureOptions, cutoff: pd.Timestamp | None, train_qids: list[str]
) -> tuple[pd.DataFrame, float] | None:
    """(per (qid, docid): impressions, clicks, summed propensities, mean dwell, last clicks; the log's mean CTR),
    or None without a click log."""
    log_df = ds.clicks
    if log_df is None or log_df.empty:
        log.info("behaviour features dropped: the dataset has no click log (logs/impressions.parquet)")
        return None
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
    return g, prior


def lookup(
    table: tuple[pd.DataFrame, float], rows: pd.DataFrame, opts: FeatureOptions
) -> dict[str, np.ndarray]:
    """The behaviour features of candidate rows from the aggregated log."""
    agg, prior = table
    g = agg.reindex(pd.MultiIndex.from_arrays([rows.qid.astype(str), rows.docid.astype(str)]))
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
