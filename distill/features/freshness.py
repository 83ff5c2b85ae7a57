"""Freshness features: `age_days` (the query's time minus the document's, in days) and `log_age` (log1p of the
age, clipped at 0). Without a query timestamp the reference time is `features.options.reference_time` or, failing
that, the newest document; without document timestamps both are dropped (logged)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from distill.features.family import FeatureContext, FeatureFamily
from distill.ir.timestamps import parse_timestamps

log = logging.getLogger(__name__)


class FreshnessFeatures(FeatureFamily):
    names = ("age_days", "log_age")
    reads_texts = False
    about = {
        "age_days": "the query's time minus the document's, in days",
        "log_age": "log1p(max(age_days, 0))",
    }

    def prepare(self, ctx: FeatureContext, wanted: set[str]) -> None:
        """The reference time of undated queries, once for every chunk (None: no document is dated, said once)."""
        doc_ts = ctx.ds.corpus["timestamp"]
        self.ref: pd.Timestamp | None = None
        if doc_ts.isna().all():
            log.info("features age_days, log_age dropped: no document has a timestamp")
        elif ctx.opts.reference_time:
            self.ref = parse_timestamps([ctx.opts.reference_time]).iloc[0]
        else:
            self.ref = doc_ts.max()
        if self.ref is not None:  # each query's time, or the reference time where it has none
            self.query_ts = ctx.ds.queries["timestamp"].fillna(self.ref)

    def compute(self, ctx: FeatureContext, rows: pd.DataFrame, wanted: set[str]) -> dict[str, np.ndarray]:
        if self.ref is None:
            return {}
        q_ts = self.query_ts.iloc[rows.qpos.to_numpy()].reset_index(drop=True)
        d_ts = ctx.ds.corpus["timestamp"].iloc[rows.dpos.to_numpy()].reset_index(drop=True)
        # Series arithmetic stays vectorised; tz-aware timestamps via to_numpy() would be one object per row
        age = np.asarray((q_ts - d_ts).to_numpy() / np.timedelta64(1, "D"), dtype=np.float64)
        return {
            "age_days": age.astype(np.float32),
            "log_age": np.log1p(np.clip(age, 0, None)).astype(np.float32),
        }
