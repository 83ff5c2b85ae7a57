"""Behaviour features from the click log (`logs/impressions.parquet`): `impressions`, `clicks`, `ctr`
(Bayesian-smoothed towards the global CTR with `features.options.ctr_prior_weight` pseudo-impressions),
`ctr_debiased` (clicks over the summed examination propensities of the impressions; propensities per position
estimated from the log as CTR(position)/CTR(1), or `features.options.propensities`), `dwell_mean`,
`last_click_rate`. No leakage: only log rows older than the cut-off (`features.options.click_cutoff`, default the
earliest test-query timestamp) are used; without timestamps, only rows of train-split queries. Without a click log
the family is dropped (logged).

The log is read a batch of `features.chunk_rows` rows at a time and aggregated per (query, document) under
integer keys (query position x documents + document position): memory holds one batch and the aggregates (one
entry per distinct logged pair and position), never the log. pandas' groupby does the sums; the batching around
it is written here because the log's propensities and last clicks need every batch before any pair's figures are
final."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from distill.data.beir import Dataset
from distill.errors import DataError
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
    `batch_rows` at a time, or None without a click log."""
    sums = PairPositionSums(len(ds.queries) * len(ds.corpus))
    deepest: list[pd.DataFrame] = []  # per batch: each session's first clicked row at its deepest position
    rows = 0
    train = ds.query_positions(pd.Index(train_qids).astype(str))
    for batch in ds.iter_clicks(batch_rows):
        rows += len(batch)
        if cutoff is not None:
            batch = batch[(batch.timestamp < cutoff).to_numpy()]
        else:
            batch = batch[np.isin(ds.query_positions(batch.qid.astype(str)), train)]
        key = pair_keys(ds, batch.qid, batch.docid)
        clicked = batch.clicked.to_numpy(bool)
        pos = batch.position.to_numpy(np.int64)
        sums.add(key, pos, clicked, np.where(clicked, batch.dwell_s.to_numpy(float), 0.0))
        if "session" in batch and clicked.any():
            cl = pd.DataFrame(
                {"session": batch.session[clicked].to_numpy(), "pos": pos[clicked], "key": key[clicked]}
            )
            deepest.append(cl.loc[cl.groupby("session", sort=False).pos.idxmax().to_numpy()])
    if not rows:
        log.info("behaviour features dropped: the dataset has no click log (logs/impressions.parquet)")
        return None
    by_pos = sums.by_pair_position()
    used = float(by_pos.impr.sum())
    if cutoff is not None:
        log.info("click log: %d of %d rows before the cut-off %s are used", used, rows, cutoff)
    else:
        log.info("click log: no cut-off time; only the %d rows of train queries are used", used)
    pos = by_pos.pos.to_numpy(np.int64)
    if opts.propensities:
        prop_table = np.asarray(opts.propensities, dtype=np.float64)
    else:
        ctr_pos = by_pos.groupby("pos").click.sum() / by_pos.groupby("pos").impr.sum()
        prop_table = np.zeros(int(pos.max()) + 1) if len(pos) else np.zeros(1)
        prop_table[ctr_pos.index.to_numpy()] = (ctr_pos / max(ctr_pos.get(1, ctr_pos.max()), 1e-9)).to_numpy()
    by_pos["prop"] = by_pos.impr.to_numpy() * prop_table[np.clip(pos, 0, len(prop_table) - 1)]
    prior = float(by_pos.click.sum()) / used if used else 0.0
    g = by_pos.drop(columns="pos").groupby("key").sum()
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


class PairPositionSums:
    """Impressions, clicks and dwell summed per (pair key, position), a batch at a time, under one int64 code per
    (key, position): key x `span` + position (`span` a power of two above every position yet seen, widened, with
    the codes held so far, when a deeper position comes), and minus the position for a row whose ids the dataset
    lacks (key -1). Each batch's sums are kept, and added up into one (a hash group-by on one integer column)
    once they hold as many rows as the last such sum, and at least `FOLD_ROWS`: memory holds at most about twice
    the log's distinct (pair, position)s, and the folds cost a few times the group-by of them all. Folding every
    few batches instead costs a pass over every sum held at each fold (most of the family's time at 300x the
    sample world: 31 folds of about 4M rows, 70 s)."""

    def __init__(self, n_keys: int):
        self.n_keys, self.span = max(1, n_keys), 2
        self.parts: list[pd.DataFrame] = []
        self.folded = self.unfolded = 0  # rows of the last fold's sum, and of the batches' sums since

    @staticmethod
    def _code(key: np.ndarray, pos: np.ndarray, span: int) -> np.ndarray:
        return np.where(key >= 0, key * span + pos, -pos)

    def _decode(self, code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        known = code >= 0
        return np.where(known, code // self.span, -1), np.where(known, code % self.span, -code)

    def add(self, key: np.ndarray, pos: np.ndarray, clicked: np.ndarray, dwell: np.ndarray) -> None:
        deepest = int(pos.max()) if len(pos) else 0
        if deepest >= self.span:
            span = 1 << deepest.bit_length()
            if self.n_keys * span >= 2**63:
                raise DataError(
                    f"click log: {self.n_keys} (query, document) pairs x positions up to {deepest} do not fit one "
                    f"64-bit key; drop the rows deeper than the ranks shown to users"
                )
            for part in self.parts:  # the codes held so far, under the wider span
                part.index = pd.Index(self._code(*self._decode(part.index.to_numpy()), span))
            self.span = span
        part = pd.DataFrame(
            {"impr": 1.0, "click": clicked.astype(float), "dwell": dwell},
            index=self._code(key, pos, self.span),
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

    def by_pair_position(self) -> pd.DataFrame:
        """key, pos, impr, click, dwell: one row per (pair, position), sorted by key then position for known
        pairs (the rows of unknown ids, key -1, first)."""
        if not self.parts:
            return pd.DataFrame(columns=["key", "pos", "impr", "click", "dwell"])
        sums = self._joined().groupby(level=0).sum()  # sorted by code
        key, pos = self._decode(sums.index.to_numpy())
        return pd.DataFrame(
            {"key": key, "pos": pos} | {c: sums[c].to_numpy() for c in ("impr", "click", "dwell")}
        )


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
