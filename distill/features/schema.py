"""`features.*`: the GBDT students' features (distill/features/build.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distill.config import DaskConfig, check


@dataclass
class FeatureOptions:
    # Bayesian smoothing of click-through rates: this many pseudo-impressions at the log's mean CTR.
    ctr_prior_weight: float = 10.0
    # Only click-log rows older than this are used (default: the earliest test-query timestamp).
    click_cutoff: str | None = None
    # Examination propensity per position (index 0 unused); null = estimated from the log as CTR(p)/CTR(1).
    propensities: list[float] | None = None
    # "Now" for document ages of queries without a timestamp (default: the newest document).
    reference_time: str | None = None

    def __post_init__(self) -> None:
        from distill.ir.timestamps import RANGE, parse_timestamps

        w = self.ctr_prior_weight
        check(w >= 0, "features.options.ctr_prior_weight", w, "must be >= 0")
        for key in ("click_cutoff", "reference_time"):
            v = getattr(self, key)
            ok = v is None or not parse_timestamps([v]).isna().iloc[0]
            check(
                ok,
                f"features.options.{key}",
                v,
                f"give an ISO-8601 time ({RANGE}), e.g. 2025-06-01T00:00:00Z",
            )
        p = self.propensities
        check(
            p is None or all(0 <= x <= 1 for x in p[1:]), "features.options.propensities", p, "each in [0, 1]"
        )


@dataclass
class FeaturesConfig:
    # which features of the families to build; [] = every one of them
    names: list[str] = field(default_factory=list)
    # candidate pairs (whole queries) computed and written (one Parquet row group) at a time; also the click
    # log's rows read at a time by the behaviour family, and the rows a GBDT student hands its library at a time
    chunk_rows: int = 200_000
    # compute the chunks on a Dask cluster (null: here; local: a LocalCluster; tcp://host:8786)
    dask: DaskConfig = field(default_factory=DaskConfig)
    options: FeatureOptions = field(default_factory=FeatureOptions)
    # the feature families (configs/feature/<name>.yaml, selected as feature@features.families=[...]):
    # {name: {_target_: module.Class}}
    families: dict[str, Any] = field(default_factory=dict)
    # Stacking: ranker names of trained students (e.g. [bi_encoder_kl, multi_vector_kl]) whose scores the GBDT
    # students add as features (`student:<name>`), learning only on train queries those students never saw
    # (distill/students/stacking.py); not part of features.parquet.
    students: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check(len(set(self.names)) == len(self.names), "features.names", self.names, "name each feature once")
        check(self.chunk_rows >= 1, "features.chunk_rows", self.chunk_rows, "must be >= 1")
