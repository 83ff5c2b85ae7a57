"""GBDT and objective benchmarks (distill/bench/students.py): their records are consistent with what they
measured, and bucketing does what it is for (less padding and memory than one padded matrix)."""

from __future__ import annotations

import pytest

from distill.bench.students import gbdt_bench, objectives_bench


def test_gbdt_records_are_consistent():
    lines = gbdt_bench(rows=2000, group=20, trees=5)
    train, score = lines[:2]
    assert train["setting"] == "gbdt_training" and train["groups"] == 100 and train["trees"] == 5
    assert train["ratio"] == pytest.approx(train["listnet_kd_s"] / train["lambdarank_s"], rel=0.02, abs=0.005)
    assert score["engine_pairs_per_s"] == pytest.approx(1000 / (score["ms_per_1000"] / 1000), rel=0.01)
    served = [x for x in lines if x["setting"] == "gbdt_served_scoring"]
    assert served[0]["scorer"] == "lightgbm Booster.predict" and served[0]["vs_booster_predict"] == 1.0
    timed = [x for x in served if "ms_per_request" in x]
    assert {"lightgbm Booster.predict", "onnxruntime"} <= {x["scorer"] for x in timed}
    for x in timed:  # every compiled form scores as the booster does
        assert x["candidates"] == 100 and x["max_abs_diff"] < 1e-5, x


def test_bucketing_pads_and_allocates_less_than_one_matrix_when_one_query_is_long():
    lines = objectives_bench(n_queries=200, width=20, long=400)
    mixed = [x for x in lines if x["widest"] == 400]
    assert {x["objective"] for x in mixed} == {"listnet_kd", "ranknet_kd", "margin_mse", "listmle_kd"}
    for x in mixed:
        assert x["cells_bucketed"] < x["padded_cells_one_matrix"]
        if "one_matrix_peak_mb" in x:
            assert x["bucketed_peak_mb"] < x["one_matrix_peak_mb"], x
