"""Behaviour features from the click log (`logs/impressions.parquet`): `impressions`, `clicks`, `ctr`
(Bayesian-smoothed towards the global CTR with `features.options.ctr_prior_weight` pseudo-impressions),
`ctr_debiased` (clicks over the summed examination propensities of the impressions; propensities per position
estimated from the log as CTR(position)/CTR(1), or `features.options.propensities`), `dwell_mean`,
`last_click_rate`. No leakage: only log rows older than the cut-off (`features.options.click_cutoff`, default the
earliest test-query timestamp) are used; without timestamps, only rows of train-split queries. Without a click log
the family is dropped (logged).

The log is read a batch of `features.chunk_rows` rows at a time (twice where the propensities are estimated: the
first pass counts each position's impressions and clicks) and aggregated per (query, document) under integer keys
(query position x documents + document position): memory holds one batch and the aggregates (one entry per
distinct logged pair), never the log. pandas' groupby does the sums; the batching around it is written here
because the log's propensities and last clicks need every batch before any pair's figures are final."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from distill.data.beir import Dataset
from distill.data.quarantine import Quarantine
from distill.features.family import FeatureContext, FeatureFamily
from distill.features.schema import FeatureOptions
from distill.ir.timestamps import parse_timestamps

log = logging.getLogger(__name__)


class BehaviourFeatures(FeatureFamily):
    names = ("impressions", "clicks", "ctr", "ctr_debiased", "dwell_mean", "last_click_rate")
    reads_texts = False
    about = {
        "impressions": "times the (query, document) pair was shown in the click log before the cut-off",
        "clicks": "clicks on the pair in the click log before the cut-off",
        "ctr": "clicks / impressions, smoothed towards the global CTR (features.options.ctr_prior_weight)",
        "ctr_debiased": "clicks over the summed examination propensities of the pair's impressions",
        "dwell_mean": "mean dwell time of the pair's clicks, seconds",
        "last_click_rate": "share of the pair's clicks that were a session's last click",
    }

    def prepare(self, ctx: FeatureContext, wanted: set[str]) -> None:
        """The log aggregated per (query, document), before the cut-off: the log's distinct pairs, not its rows
        and not the candidates'."""
        self.table = click_table(ctx)

    def compute(self, ctx: FeatureContext, rows: pd.DataFrame, wanted: set[str]) -> dict[str, np.ndarray]:
        if self.table is None:
            return {}
        key = position_keys(ctx.ds, rows.qpos.to_numpy(), rows.dpos.to_numpy())
        return {k: v for k, v in lookup(self.table, key, ctx.opts).items() if k in wanted}


def click_table(ctx: FeatureContext) -> ClickTable | None:
    """The used log aggregated per pair (`aggregate`), once for every family that reads it (`ctx.shared`)."""
    return ctx.shared(
        "clicks",
        lambda: aggregate(
            ctx.ds,
            ctx.opts,
            click_cutoff(ctx.ds, ctx.opts, ctx.splits),
            ctx.splits.get("train", []),
            ctx.chunk_rows,
        ),
    )


def click_cutoff(ds: Dataset, opts: FeatureOptions, splits: dict[str, list[str]]) -> pd.Timestamp | None:
    if opts.click_cutoff:
        return parse_timestamps([opts.click_cutoff]).iloc[0]
    test = splits.get("test")
    if test is not None and ds.queries["timestamp"].reindex(test).notna().all():
        return ds.queries["timestamp"].reindex(test).min()
    return None


# Per-batch sums held, at least, before they are added up into one (and then as many as that one holds)
FOLD_ROWS = 1_000_000


@dataclass
class ClickTable:
    """The used log per (query, document): `keys` sorted (`pair_keys`: query position x the corpus's size +
    document position), and per key impressions, clicks, summed propensities, mean dwell of the clicks, last
    clicks; `prior` is the log's mean CTR."""

    keys: np.ndarray
    impr: np.ndarray
    click: np.ndarray
    prop: np.ndarray
    dwell: np.ndarray
    last: np.ndarray
    prior: float


def pair_keys(ds: Dataset, qids: pd.Series, docids: pd.Series) -> np.ndarray:
    """Integer keys of (qid, docid) pairs in the dataset (-1 for an id it does not hold)."""
    return position_keys(ds, ds.query_positions(qids.astype(str)), ds.doc_positions(docids.astype(str)))


def position_keys(ds: Dataset, q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The keys of pairs given by query and document positions (-1 where either is -1)."""
    return np.where((q >= 0) & (d >= 0), q.astype(np.int64) * len(ds.corpus) + d, -1)


def aggregate(
    ds: Dataset, opts: FeatureOptions, cutoff: pd.Timestamp | None, train_qids: list[str], batch_rows: int
) -> ClickTable | None:
    """The used rows of the log (before `cutoff`, else those of train queries) aggregated per pair, read
    `batch_rows` at a time, or None without a click log. Two passes where the propensities are estimated: the
    first counts impressions and clicks per position (each position's propensity is its CTR over the top's),
    the second sums each pair's impressions' propensities with the rest of its figures. Summing per (pair,
    position) in one pass instead held 3.5x as many rows at 100x the sample world (2.9M against 826,000 pairs),
    and its final group-by was the features stage's peak."""
    train = ds.query_positions(pd.Index(train_qids).astype(str))

    def used(quarantine: Quarantine | None = None) -> Iterator[tuple[int, pd.DataFrame]]:
        """(the batch's rows, its used rows) for each batch of the log."""
        for batch in ds.iter_clicks(batch_rows, quarantine):
            if cutoff is not None:
                yield len(batch), batch[(batch.timestamp < cutoff).to_numpy()]
            else:
                yield len(batch), batch[np.isin(ds.query_positions(batch.qid.astype(str)), train)]

    if opts.propensities:
        prop_table = np.asarray(opts.propensities, dtype=np.float64)
    else:  # the first pass: its bad rows are those the second reports (or the first raises on)
        impr_at, click_at = np.zeros(1), np.zeros(1)
        for _, batch in used(Quarantine(ds.quarantine.on_error)):
            pos = batch.position.to_numpy(np.int64)
            impr_at = _added(impr_at, np.bincount(pos))
            click_at = _added(click_at, np.bincount(pos, weights=batch.clicked.to_numpy(float)))
        with np.errstate(invalid="ignore", divide="ignore"):
            ctr_at = np.where(impr_at > 0, click_at / impr_at, 0.0)
        shown = np.flatnonzero(impr_at > 0)
        top = (
            ctr_at[1] if len(impr_at) > 1 and impr_at[1] > 0 else (ctr_at[shown].max() if len(shown) else 0.0)
        )
        prop_table = ctr_at / max(top, 1e-9)
    sums = PairSums()
    deepest: list[pd.DataFrame] = []  # per batch: each session's first clicked row at its deepest position
    rows = 0
    for n, batch in used():
        rows += n
        key = pair_keys(ds, batch.qid, batch.docid)
        clicked = batch.clicked.to_numpy(bool)
        pos = batch.position.to_numpy(np.int64)
        prop = prop_table[np.clip(pos, 0, len(prop_table) - 1)]
        sums.add(key, clicked, np.where(clicked, batch.dwell_s.to_numpy(float), 0.0), prop)
        if "session" in batch and clicked.any():
            cl = pd.DataFrame(
                {"session": batch.session[clicked].to_numpy(), "pos": pos[clicked], "key": key[clicked]}
            )
            deepest.append(cl.loc[cl.groupby("session", sort=False).pos.idxmax().to_numpy()])
    if not rows:
        log.info("behaviour features dropped: the dataset has no click log (logs/impressions.parquet)")
        return None
    g = sums.by_pair()
    used_rows = float(g.impr.sum())
    if cutoff is not None:
        log.info("click log: %d of %d rows before the cut-off %s are used", used_rows, rows, cutoff)
    else:
        log.info("click log: no cut-off time; only the %d rows of train queries are used", used_rows)
    prior = float(g.click.sum()) / used_rows if used_rows else 0.0
    last = pd.Series(0.0, index=g.index)
    if deepest:
        # a session's last click: its clicked row at the deepest position (the first such row in log order; a
        # session that spans batches has one candidate row per batch, in log order)
        cl = pd.concat(deepest, ignore_index=True)
        last_rows = cl.loc[cl.groupby("session", sort=False).pos.idxmax().to_numpy()]
        last = last.add(last_rows.groupby("key").size().astype(float), fill_value=0.0)
    g = g[g.index >= 0]  # pairs of ids the dataset lacks match no candidate
    with np.errstate(invalid="ignore", divide="ignore"):
        dwell = np.where(g.click.to_numpy() > 0, g.dwell.to_numpy() / g.click.to_numpy(), np.nan)
    return ClickTable(
        g.index.to_numpy(np.int64),
        g.impr.to_numpy(),
        g.click.to_numpy(),
        g.prop.to_numpy(),
        dwell,
        last.reindex(g.index).fillna(0.0).to_numpy(),
        prior,
    )


def _added(total: np.ndarray, more: np.ndarray) -> np.ndarray:
    """Two per-position counts added, the shorter padded with zeros."""
    out = np.zeros(max(len(total), len(more)))
    out[: len(total)] += total
    out[: len(more)] += more
    return out


class PairSums:
    """Impressions, clicks, dwell and propensities summed per pair key (`pair_keys`; -1, one group, for the rows
    whose ids the dataset lacks), a batch at a time. Each batch's sums are kept, and added up into one (a hash
    group-by on one integer column) once they hold as many rows as the last such sum, and at least `FOLD_ROWS`:
    memory holds at most about twice the log's distinct pairs, and the folds cost a few times the group-by of
    them all. Folding every few batches instead costs a pass over every sum held at each fold (most of the
    family's time at 300x the sample world: 31 folds of about 4M rows, 70 s)."""

    def __init__(self) -> None:
        self.parts: list[pd.DataFrame] = []
        self.folded = self.unfolded = 0  # rows of the last fold's sum, and of the batches' sums since

    def add(self, key: np.ndarray, clicked: np.ndarray, dwell: np.ndarray, prop: np.ndarray) -> None:
        part = pd.DataFrame(
            {"impr": 1.0, "click": clicked.astype(float), "dwell": dwell, "prop": prop}, index=key
        )
        self.parts.append(part.groupby(level=0, sort=False).sum())
        self.unfolded += len(self.parts[-1])
        if self.unfolded >= max(self.folded, FOLD_ROWS):
            self.parts = [self._joined().groupby(level=0, sort=False).sum()]
            self.folded, self.unfolded = len(self.parts[0]), 0

    def _joined(self) -> pd.DataFrame:
        """The sums held, as one frame, and let go: the group-by that adds them up then takes its memory beside
        one copy of them, not two (at 100x the sample world the features stage's peak went from 1,975-2,001 MiB to
        1,840-1,912 MiB; docs/results.md)."""
        joined, self.parts = pd.concat(self.parts), []
        return joined

    def by_pair(self) -> pd.DataFrame:
        """impr, click, dwell, prop per pair key, sorted by key (the rows of unknown ids, key -1, first)."""
        if not self.parts:
            return pd.DataFrame(
                columns=["impr", "click", "dwell", "prop"], index=pd.Index([], dtype=np.int64)
            )
        return self._joined().groupby(level=0).sum()


def lookup(table: ClickTable, key: np.ndarray, opts: FeatureOptions) -> dict[str, np.ndarray]:
    """The behaviour features of the pairs `key` (`pair_keys`) from the aggregated log."""
    at = np.minimum(np.searchsorted(table.keys, key), max(len(table.keys) - 1, 0))
    hit = (key >= 0) & (table.keys[at] == key) if len(table.keys) else np.zeros(len(key), dtype=bool)

    def col(values: np.ndarray, missing: float) -> np.ndarray:
        return np.where(hit, values[at], missing) if len(values) else np.full(len(key), missing)

    impr, clicks, prop = col(table.impr, 0.0), col(table.click, 0.0), col(table.prop, 0.0)
    w = float(opts.ctr_prior_weight)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "impressions": impr.astype(np.float32),
            "clicks": clicks.astype(np.float32),
            "ctr": ((clicks + w * table.prior) / (impr + w)).astype(np.float32),
            "ctr_debiased": np.where(prop > 0, clicks / prop, np.nan).astype(np.float32),
            "dwell_mean": col(table.dwell, np.nan).astype(np.float32),
            "last_click_rate": np.where(
                clicks > 0, col(table.last, 0.0) / np.maximum(clicks, 1), np.nan
            ).astype(np.float32),
        }
