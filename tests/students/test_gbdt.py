import json

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from distill.data.prepare import load_dataset
from distill.errors import ConfigError, DataError
from distill.features.build import ALL_FEATURES, build_features
from distill.features.build import run as run_features
from distill.retrieval.candidates import run as run_candidates
from distill.students.base import Context, load_scorers
from distill.students.gbdt import student_config, train_gbdt, training_frame
from distill.workspace import Workspace


def test_features_are_complete_and_sensible(tiny_sample_cfg):
    cfg = tiny_sample_cfg("retrieval.k=15")
    run_candidates(cfg)
    df = run_features(cfg)
    cands = pd.read_parquet(f"{cfg.paths.workspace}/candidates.parquet")
    assert len(df) == len(cands) and (df.qid.to_numpy() == cands.qid.to_numpy()).all()
    expected = [f for f in ALL_FEATURES if f != "popularity"]  # the sample world has no popularity field
    assert [c for c in df.columns if c not in ("qid", "docid", "split")] == expected
    assert df.coverage.between(0, 1).all() and (df.query_len >= 0).all()
    assert (df.impressions >= df.clicks).all() and df.ctr.between(0, 1).all()
    # per-field BM25 of the body agrees closely with the candidates' BM25 over title + body
    assert df[["bm25_text", "bm25"]].corr(method="spearman").iloc[0, 1] > 0.8
    assert (df.bm25_title >= 0).all()


def test_coverage_and_age_hand_example(tiny_beir, make_cfg):
    root = tiny_beir(queries=[{"_id": "q1", "text": "cat on a mat zebra"}, {"_id": "q2", "text": "markets"}])
    cfg = make_cfg("data=beir", f"data.path={root}", "retrieval.stemmer=null", "retrieval.stopwords=null")
    ds = load_dataset(cfg)
    cands = pd.DataFrame(
        {
            "qid": ["q1", "q1"],
            "docid": ["d1", "d3"],
            "rank": [1, 2],
            "bm25": [2.0, 0.5],
            "split": ["test", "test"],
        }
    )
    df = build_features(ds, cands, ["coverage", "query_len", "age_days", "popularity"], {}, cfg.retrieval)
    # q1 = "cat on a mat zebra" -> terms cat, on, mat, zebra ("a" is too short): d1 has 3 of 4; d3 none
    np.testing.assert_allclose(df.coverage, [0.75, 0.0])
    assert df.query_len.tolist() == [4, 4]
    assert df.age_days.iloc[0] == 0.0 and np.isnan(df.age_days.iloc[1])  # reference = newest doc; d3 undated
    assert "popularity" not in df  # no such field: dropped, logged


def test_unknown_feature_is_an_error(tiny_beir, make_cfg):
    cfg = make_cfg("data=beir", f"data.path={tiny_beir()}")
    with pytest.raises(ConfigError, match=r"unknown feature\(s\) \['pagerank'\]"):
        build_features(
            load_dataset(cfg),
            pd.DataFrame(columns=["qid", "docid", "rank", "bm25", "split"]),
            ["pagerank"],
            {},
            cfg.retrieval,
        )


@pytest.mark.parametrize(
    "student,objective",
    [
        ("lightgbm", "listnet_kd"),
        ("lightgbm", "lambdarank"),
        ("lightgbm", "regression"),
        ("xgboost", "ranknet_kd"),
        ("xgboost", "lambdarank"),
    ],
)
def test_train_student_writes_native_model(gbdt_ws, student, objective):
    cfg = gbdt_ws(f"student={student}", f"student.objective={objective}")
    info = train_gbdt(cfg)
    out = f"{cfg.paths.workspace}/models/{student}"
    names = json.load(open(f"{out}/features.json"))
    feats = pd.read_parquet(f"{cfg.paths.workspace}/features.parquet")
    X = feats[names].to_numpy(np.float32)
    if student == "lightgbm":
        pred = lgb.Booster(model_file=f"{out}/model.txt").predict(X)
    else:
        booster = xgb.Booster()
        booster.load_model(f"{out}/model.json")
        pred = booster.predict(xgb.DMatrix(X))
    assert len(pred) == len(feats) and np.isfinite(pred).all() and info["trees"] >= 1
    assert pd.read_csv(f"{out}/importance.csv").feature.tolist()[0] in names
    # the folder loads from its student.json and scores as the library's own Booster.predict does
    ws = Workspace.from_cfg(cfg)
    (scorer,) = load_scorers(ws.model(student), Context(None, ws, feats))  # type: ignore[arg-type]
    np.testing.assert_allclose(scorer.score(feats[["qid", "docid"]]), pred, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("student,file", [("lightgbm", "model.txt"), ("xgboost", "model.json")])
def test_same_seed_same_model(gbdt_ws, student, file):
    cfg = gbdt_ws(f"student={student}", "student.objective=ranknet_kd")
    out = f"{cfg.paths.workspace}/models/{student}/{file}"
    train_gbdt(cfg)
    first = open(out).read().split("feature_importances")[0]
    train_gbdt(cfg)
    assert open(out).read().split("feature_importances")[0] == first


def test_training_frame_blends_and_checks():
    feats = pd.DataFrame(
        {"qid": ["a", "a", "b"], "docid": ["1", "2", "3"], "split": ["train"] * 3, "f": [1, 2, 3]}
    )
    soft = pd.DataFrame({"qid": ["a", "a", "b"], "docid": ["1", "2", "3"], "score": [2.0, 0.0, 1.0]})
    qrels = pd.DataFrame({"qid": ["a"], "docid": ["2"], "relevance": [1]})
    assert training_frame(feats, soft, qrels, 1.0).target.tolist() == [2.0, 0.0, 1.0]
    blended = training_frame(feats, soft, qrels, 0.5).target.to_numpy()
    np.testing.assert_allclose(blended[:2], [0.5 * 1 + 0.5 * -1, 0.5 * -1 + 0.5 * 1])
    # query b lacks its label: 1 of 2 train queries covered, below the rule's 0.95
    with pytest.raises(
        DataError, match=r"soft labels cover 1 of the 2 train queries \(50.0%.*min_label_coverage"
    ):
        training_frame(feats, soft.iloc[:2], qrels, 1.0, 0.95)
    # a lower threshold trains on the covered query alone
    assert training_frame(feats, soft.iloc[:2], qrels, 1.0, 0.5).qid.unique().tolist() == ["a"]


def test_bad_student_config(make_cfg):
    with pytest.raises(ConfigError, match="student.objective='hinge'"):
        student_config(make_cfg("student.objective=hinge").student)
