"""`popularity`: log1p of the corpus's `popularity` field (e.g. CACM's citation counts), where the data has it."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from distill.features.family import FeatureContext, FeatureFamily

log = logging.getLogger(__name__)


class PopularityFeatures(FeatureFamily):
    names = ("popularity",)
    reads_texts = False
    about = {"popularity": "log1p of the document's popularity field"}

    def prepare(self, ctx: FeatureContext, wanted: set[str]) -> None:
        if "popularity" in wanted and "popularity" not in ctx.ds.corpus:  # said once, not once per chunk
            log.info("feature popularity dropped: the corpus has no 'popularity' field")

    def compute(self, ctx: FeatureContext, rows: pd.DataFrame, wanted: set[str]) -> dict[str, np.ndarray]:
        corpus = ctx.ds.corpus
        if "popularity" not in corpus:
            return {}
        pop = corpus.popularity.iloc[rows.dpos.to_numpy()].astype(float).clip(lower=0)
        return {"popularity": np.log1p(pop).to_numpy(np.float32)}
