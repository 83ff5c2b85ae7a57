import json

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from distill.errors import ConfigError
from distill.students.base import Context, load_scorers
from distill.students.gbdt import student_config, train_gbdt
from distill.workspace import Workspace


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


def test_bad_student_config(make_cfg):
    with pytest.raises(ConfigError, match="student.objective='hinge'"):
        student_config(make_cfg("student.objective=hinge").student)


def tree_depth(node: dict) -> int:
    return (
        0
        if "leaf_index" in node
        else 1 + max(tree_depth(node["left_child"]), tree_depth(node["right_child"]))
    )


def test_lightgbm_takes_max_depth_and_xgboost_refuses_lightgbm_keys(gbdt_ws, make_cfg):
    """One schema per library: LightGBM's max_depth reaches LightGBM (it once was never passed), and a key the
    chosen library does not take is refused when the config is composed."""
    from hydra.errors import ConfigCompositionException

    deep = train_gbdt(gbdt_ws("student=lightgbm", "student.num_trees=5"))
    ws = Workspace(__import__("pathlib").Path(gbdt_ws().paths.workspace))
    dump = lgb.Booster(model_file=str(ws.model("lightgbm") / "model.txt")).dump_model()
    assert max(tree_depth(t["tree_structure"]) for t in dump["tree_info"]) > 2 and deep["trees"] >= 1
    train_gbdt(gbdt_ws("student=lightgbm", "student.num_trees=5", "student.max_depth=2"))
    dump = lgb.Booster(model_file=str(ws.model("lightgbm") / "model.txt")).dump_model()
    assert max(tree_depth(t["tree_structure"]) for t in dump["tree_info"]) <= 2
    with pytest.raises(ConfigCompositionException, match="num_leaves"):
        make_cfg("student=xgboost", "student.num_leaves=8")
