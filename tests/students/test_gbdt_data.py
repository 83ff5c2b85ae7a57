"""The GBDT students' rows read a row group at a time: the same rows, labels and models as whole arrays."""

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from distill.errors import DataError
from distill.students.gbdt_data import (
    Codes,
    FeatureMatrix,
    RowSource,
    lightgbm_rows,
    training_rows,
    xgboost_batches,
)


def world(n_queries=40, per_query=12, seed=0, interleave=False):
    """Feature rows (train and test split) and the teacher's scores for them, shuffled."""
    rng = np.random.default_rng(seed)
    q = np.repeat([f"q{i}" for i in range(n_queries)], per_query)
    d = np.array([f"d{rng.integers(0, 300)}-{i}" for i in range(len(q))])
    feats = pd.DataFrame(
        {
            "qid": q,
            "docid": d,
            "split": np.where(np.repeat(np.arange(n_queries) % 5 == 0, per_query), "test", "train"),
            "f1": rng.normal(size=len(q)).astype(np.float32),
            "f2": rng.integers(0, 9, len(q)).astype(np.float32),
            "f3": np.where(rng.random(len(q)) < 0.2, np.nan, rng.random(len(q))).astype(np.float32),
        }
    )
    if interleave:  # the queries' rows not contiguous
        feats = feats.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    soft = feats[["qid", "docid"]].assign(score=rng.normal(size=len(feats)).astype(np.float32))
    return feats, soft.sample(frac=1.0, random_state=seed + 1).reset_index(drop=True)


def parts(soft, n):
    return [soft.iloc[i::n].reset_index(drop=True) for i in range(n)]


def rows_of(source, soft, **kw):
    opts = dict(qrels=pd.DataFrame(columns=["qid", "docid", "relevance"]), alpha=1.0, min_coverage=1.0)
    opts |= dict(val_fraction=0.25, seed=3) | kw
    return training_rows(source, soft, **opts)


def reference(feats, soft, tr, side="train"):
    """The rows `tr` names, and their teacher scores joined by pandas."""
    at = getattr(tr, side)
    rows = feats.iloc[at].reset_index(drop=True)
    return rows, rows.merge(soft, on=["qid", "docid"], how="left").score.to_numpy(float)


@pytest.mark.parametrize("interleave", [False, True])
def test_rows_and_scores_equal_a_pandas_join_whatever_the_blocks(tmp_path, interleave):
    feats, soft = world(interleave=interleave)
    whole = rows_of(RowSource(feats), [soft])
    path = tmp_path / "features.parquet"
    feats.to_parquet(path, row_group_size=7)
    chunked = rows_of(RowSource(path), parts(soft, 5))
    for name in ("train", "val", "target", "score_val", "sizes", "sizes_val"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name))
    rows, score = reference(feats, soft, chunked)
    np.testing.assert_array_equal(chunked.target, score)  # alpha = 1: the teacher's scores, row for row
    assert set(rows.split) == {"train"} and len(chunked.val) > 0
    # grouped by query, in the order the file first names them, train and validation never share a query
    first = {q: i for i, q in reversed(list(enumerate(feats.qid)))}
    runs = rows.qid[rows.qid.ne(rows.qid.shift())].tolist()
    assert runs == sorted(set(rows.qid), key=first.get)
    assert list(chunked.sizes) == rows.groupby("qid", sort=False).size().tolist()
    assert not set(rows.qid) & set(feats.qid.iloc[chunked.val])
    # the features at those rows, a block at a time, equal the frame's
    names = ["f1", "f2", "f3"]
    m = FeatureMatrix(RowSource(path), names, chunked.train)
    np.testing.assert_array_equal(m.to_numpy(), rows[names].to_numpy(np.float32))
    np.testing.assert_array_equal(m.row(5), rows[names].to_numpy(np.float32)[5])


def test_blended_targets_and_coverage():
    feats = pd.DataFrame(
        {"qid": ["a", "a", "b"], "docid": ["1", "2", "3"], "split": ["train"] * 3, "f": [1.0, 2.0, 3.0]}
    )
    soft = pd.DataFrame({"qid": ["b", "a", "a"], "docid": ["3", "2", "1"], "score": [1.0, 0.0, 2.0]})
    qrels = pd.DataFrame({"qid": ["a"], "docid": ["2"], "relevance": [1]})
    src = RowSource(feats)
    assert rows_of(src, [soft], val_fraction=0.0).target.tolist() == [2.0, 0.0, 1.0]
    blended = rows_of(src, [soft], qrels=qrels, alpha=0.5, val_fraction=0.0).target
    np.testing.assert_allclose(blended, [0.5 * 1 + 0.5 * -1, 0.5 * -1 + 0.5 * 1, 0.0])
    # query b lacks its label: 1 of 2 train queries covered, below the rule's 0.95
    with pytest.raises(
        DataError, match=r"soft labels cover 1 of the 2 train queries \(50.0%.*min_label_coverage"
    ):
        rows_of(src, [soft.iloc[1:]], min_coverage=0.95)
    # a lower threshold trains on the covered query alone
    kept = rows_of(src, [soft.iloc[1:]], min_coverage=0.5, val_fraction=0.0)
    assert kept.train.tolist() == [0, 1] and kept.sizes.tolist() == [2]
    # queries a stacked student saw are left out
    assert rows_of(src, [soft], seen={"a"}, val_fraction=0.0).train.tolist() == [2]
    with pytest.raises(DataError, match="every train query was seen by a stacked student"):
        rows_of(src, [soft], seen={"a", "b"})


def test_a_pair_scored_twice_across_parts_is_refused():
    feats, soft = world()
    again = soft.iloc[[3]].assign(score=9.0)
    pair = (soft.qid.iloc[3], soft.docid.iloc[3])
    if feats.set_index(["qid", "docid"]).loc[pair, "split"] != "train":
        pytest.skip("the drawn pair is not a train row")
    with pytest.raises(
        DataError,
        match=rf"1 \(qid, docid\) pair\(s\) appear more than once \(first: '{pair[0]}', '{pair[1]}'\)",
    ):
        rows_of(RowSource(feats), [*parts(soft, 3), again])


def test_no_train_split_is_refused():
    feats, soft = world()
    with pytest.raises(DataError, match="no train-split candidate"):
        rows_of(RowSource(feats.assign(split="test")), [soft])


def test_codes_number_ids_in_first_seen_order():
    c = Codes()
    assert c.add(np.array(["b", "a", "b"])).tolist() == [0, 1, 0]
    assert c.add(np.array(["c", "a"])).tolist() == [2, 1]
    assert c.get(np.array(["a", "zz", "c"])).tolist() == [1, -1, 2]


@pytest.fixture
def learned(tmp_path):
    feats, soft = world(n_queries=60, per_query=15)
    path = tmp_path / "features.parquet"
    feats.to_parquet(path, row_group_size=11)
    tr = rows_of(RowSource(path), parts(soft, 4))
    m = FeatureMatrix(RowSource(path), ["f1", "f2", "f3"], tr.train)
    grades = np.clip(np.round(tr.target + 2), 0, 4).astype(np.int32)
    return m, grades, tr


def test_lightgbm_from_the_sequence_is_the_model_from_the_array(learned):
    m, grades, tr = learned
    # a bin sample smaller than the rows: LightGBM samples rows one by one from the Sequence
    params = {"objective": "lambdarank", "verbose": -1, "num_threads": 1, "deterministic": True, "seed": 5}
    params |= {"data_random_seed": 5, "bin_construct_sample_cnt": 100, "min_data_in_leaf": 3}
    seq = lgb.Dataset([lightgbm_rows(m, 17)], grades, group=tr.sizes, params=params)
    arr = lgb.Dataset(m.to_numpy(), grades, group=tr.sizes, params=params)
    a, b = (lgb.train(params, d, num_boost_round=8).model_to_string() for d in (seq, arr))
    assert a == b


def test_xgboost_from_batches_is_the_model_from_the_array(learned):
    m, grades, tr = learned
    params = {"objective": "rank:ndcg", "nthread": 1, "seed": 5, "max_depth": 3}
    it = xgb.QuantileDMatrix(xgboost_batches(m, grades, tr.sizes, 50))
    arr = xgb.DMatrix(m.to_numpy(), label=grades)
    arr.set_group(tr.sizes)
    a, b = (xgb.train(params, d, num_boost_round=8).save_raw("json") for d in (it, arr))
    assert a == b
