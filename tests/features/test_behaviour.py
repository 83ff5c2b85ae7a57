"""The behaviour family against figures worked out by hand from a small click log, at several batch sizes (the
log is read a batch at a time: sessions and pairs span batches)."""

import numpy as np
import pandas as pd
import pytest

from distill.data.beir import Dataset
from distill.errors import ConfigError
from distill.features import behaviour
from distill.features.behaviour import BehaviourFeatures
from distill.features.family import FeatureContext, with_positions
from distill.features.schema import FeatureOptions

LOG = [  # session, qid, docid, position, clicked, dwell_s, timestamp
    (1, "q1", "d1", 1, True, 10.0, "2025-01-01T00:00:00Z"),
    (1, "q1", "d2", 2, True, 30.0, "2025-01-01T00:00:00Z"),  # session 1's last click
    (1, "q1", "d3", 3, False, 0.0, "2025-01-01T00:00:00Z"),
    (2, "q1", "d2", 1, False, 0.0, "2025-01-02T00:00:00Z"),
    (2, "q1", "d1", 2, True, 20.0, "2025-01-02T00:00:00Z"),  # session 2's last click
    (3, "q2", "d3", 1, True, 5.0, "2025-01-03T00:00:00Z"),  # session 3's last click
    # a document the corpus lacks, deeper than any row before: it counts in the log's CTRs, matches no candidate
    (3, "q2", "d9", 5, False, 0.0, "2025-01-03T00:00:00Z"),
    (4, "q2", "d3", 1, True, 7.0, "2025-02-01T00:00:00Z"),  # after the cut-off: not used
]


def dataset(tmp_path) -> Dataset:
    log = pd.DataFrame(
        LOG, columns=["session", "qid", "docid", "position", "clicked", "dwell_s", "timestamp"]
    )
    log["timestamp"] = pd.to_datetime(log.timestamp, utc=True)
    (tmp_path / "logs").mkdir()
    log.to_parquet(tmp_path / "logs" / "impressions.parquet")
    corpus = pd.DataFrame({"title": "", "text": ["a", "b", "c"]}, index=pd.Index(["d1", "d2", "d3"]))
    queries = pd.DataFrame({"text": ["x", "y"], "timestamp": pd.NaT}, index=pd.Index(["q1", "q2"]))
    return Dataset("hand", corpus, queries, {}, tmp_path / "logs" / "impressions.parquet")


@pytest.mark.parametrize("batch_rows,fold", [(1, 1), (1, 3), (2, 2), (1000, 1_000_000)])
def test_behaviour_features_equal_the_hand_worked_figures(tmp_path, monkeypatch, batch_rows, fold):
    # used rows: the first seven. CTR by position: 1 -> 2/3, 2 -> 2/2, 3 -> 0/1, 5 -> 0/1; propensities
    # CTR(p)/CTR(1): 1, 1.5, 0, 0. The log's mean CTR (prior) 4/7. ctr = (clicks + 10 * prior) / (impressions + 10).
    monkeypatch.setattr(behaviour, "FOLD_ROWS", fold)  # the batches' sums folded from `fold` rows on
    ds = dataset(tmp_path)
    opts = FeatureOptions(click_cutoff="2025-01-15T00:00:00Z")
    ctx = FeatureContext(ds, opts, None, {"train": ["q1", "q2"]}, chunk_rows=batch_rows)
    fam = BehaviourFeatures()
    fam.prepare(ctx, set(fam.names))
    rows = pd.DataFrame({"qid": ["q1", "q1", "q1", "q2", "q2"], "docid": ["d1", "d2", "d3", "d3", "d1"]})
    got = fam.compute(ctx, with_positions(ctx, rows), set(fam.names))
    prior = 4 / 7
    expected = {
        "impressions": [2, 2, 1, 1, 0],
        "clicks": [2, 1, 0, 1, 0],
        "ctr": [(c + 10 * prior) / (i + 10) for c, i in [(2, 2), (1, 2), (0, 1), (1, 1), (0, 0)]],
        # clicks over summed propensities: d1 shown at 1 and 2 (1 + 1.5), d2 at 2 and 1, d3 only at 3 (0)
        "ctr_debiased": [2 / 2.5, 1 / 2.5, np.nan, 1.0, np.nan],
        "dwell_mean": [15.0, 30.0, np.nan, 5.0, np.nan],
        # session 1's last click is d2, session 2's d1, session 3's d3
        "last_click_rate": [0.5, 1.0, np.nan, 1.0, np.nan],
    }
    for name, values in expected.items():
        np.testing.assert_allclose(got[name], np.asarray(values, dtype=np.float32), rtol=1e-6, err_msg=name)


def test_a_click_log_batch_of_no_rows_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="batch_rows=0: a click-log batch needs at least one row"):
        next(dataset(tmp_path).iter_clicks(0))


def test_the_propensity_pass_neither_counts_bad_rows_twice_nor_lets_them_through(tmp_path):
    """The propensities are estimated in a first pass over the log: a bad row is dropped from both passes and
    counted once (`data.on_error=drop`), or refused by the first (`raise`)."""
    from distill.data.quarantine import Quarantine
    from distill.errors import DataError

    ds = dataset(tmp_path)
    log = pd.read_parquet(ds.clicks_source)
    log.loc[len(log)] = (5, "q1", "d1", 0, True, 1.0, pd.Timestamp("2025-01-04", tz="UTC"))  # position 0
    log.to_parquet(ds.clicks_source)
    opts = FeatureOptions(click_cutoff="2025-01-15T00:00:00Z")
    ds.quarantine = Quarantine("drop")
    ctx = FeatureContext(ds, opts, None, {"train": ["q1", "q2"]}, chunk_rows=3)
    fam = BehaviourFeatures()
    fam.prepare(ctx, set(fam.names))
    assert [r["detail"] for r in ds.quarantine.rows] == [
        "row 9: position must be a whole number >= 1 (1 = the top result)"
    ]
    assert fam.table is not None and fam.table.impr.sum() == 6  # the seven used rows less d9's (unknown)
    ds.quarantine = Quarantine("raise")
    with pytest.raises(DataError, match=r"impressions.parquet: row 9: position must be a whole number >= 1"):
        BehaviourFeatures().prepare(FeatureContext(ds, opts, None, {"train": ["q1"]}, chunk_rows=3), {"ctr"})
