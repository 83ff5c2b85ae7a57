import math

import pandas as pd
import pytest

from distill.ir.metrics import evaluate, per_query


def qrels(rows):
    return pd.DataFrame(rows, columns=["qid", "docid", "relevance"])


def run(rows):
    return pd.DataFrame(rows, columns=["qid", "docid", "score"])


def test_hand_computed_single_query():
    q = qrels([("q", "a", 2), ("q", "b", 1), ("q", "z", 1)])
    r = run([("q", "x", 3.0), ("q", "a", 2.0), ("q", "b", 1.0)])
    m = evaluate(q, r)
    dcg = 2 / math.log2(3) + 1 / math.log2(4)  # trec_eval's nDCG: gain = grade, at ranks 2 and 3
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@10"] == pytest.approx(dcg / idcg)
    assert m["mrr@10"] == pytest.approx(1 / 2)
    assert m["recall@100"] == pytest.approx(2 / 3)
    assert m["map"] == pytest.approx((1 / 2 + 2 / 3) / 3)


def test_query_missing_from_run_scores_zero():
    q = qrels([("q1", "a", 1), ("q2", "b", 1)])
    r = run([("q1", "a", 1.0)])
    m = evaluate(q, r)
    assert m["ndcg@10"] == pytest.approx(0.5) and m["queries"] == 2


def test_query_without_relevant_judgement_not_evaluated():
    q = qrels([("q1", "a", 1), ("q2", "b", 0)])
    r = run([("q1", "a", 1.0), ("q2", "b", 1.0)])
    assert list(per_query(q, r).index) == ["q1"]


def test_queries_evaluated_in_chunks_give_the_same_figures(monkeypatch):
    import numpy as np

    import distill.ir.metrics as metrics

    rng = np.random.default_rng(0)
    q = qrels([(f"q{i}", f"d{j}", int(rng.integers(0, 3))) for i in range(9) for j in range(6)])
    r = run([(f"q{i}", f"d{j}", float(rng.normal())) for i in range(10) for j in range(8)])
    whole = per_query(q, r)
    monkeypatch.setattr(metrics, "QUERY_CHUNK", 2)
    pd.testing.assert_frame_equal(per_query(q, r), whole)
    assert len(whole) == q[q.relevance > 0].qid.nunique() and whole["ndcg@10"].between(0, 1).all()
