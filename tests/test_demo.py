import json

from distill.demo import run as run_demo
from tests.test_teacher_train_import import TINY_TRAIN


def test_shrunk_demo_end_to_end(tiny_sample_cfg):
    cfg = tiny_sample_cfg(
        *TINY_TRAIN, "student.num_trees=10", "student.early_stopping=3", "student.min_data_in_leaf=5"
    )
    metrics = run_demo(cfg)
    saved = json.loads(open(f"{cfg.paths.workspace}/metrics.json").read())
    assert set(saved["rankers"]) == {"bm25", "teacher", "lightgbm", "xgboost"}
    for name, m in saved["rankers"].items():
        assert 0 <= m["ndcg@10"] <= 1 and 0 <= m["map"] <= 1
        if name != "teacher":  # None when the (untrained, tiny) teacher gives a query constant scores
            assert m["kendall_tau_vs_teacher"] is None or -1 <= m["kendall_tau_vs_teacher"] <= 1
    assert metrics["rankers"]["bm25"] == saved["rankers"]["bm25"]
