import json
from pathlib import Path

from distill.demo import run as run_demo
from tests.helpers import TINY_TRAIN

TINY_NEURAL = [
    f"++demo.overrides.{name}.{opt}"
    for name in ("bi_encoder", "multi_vector", "sparse")
    for opt in (
        "negatives=3",
        "negative_margin=null",
        "samples_per_positive=2",
        "max_length=48",
        "batch_size=16",
    )
] + ["++demo.overrides.bi_encoder.embedding_dim=32", "++demo.overrides.multi_vector.document_length=48"]
TINY_GBDT = [
    f"+demo.overrides.{name}.{opt}"
    for name in ("lightgbm", "xgboost")
    for opt in ("num_trees=10", "early_stopping=3")
] + ["+demo.overrides.lightgbm.min_data_in_leaf=5"]


def test_shrunk_demo_end_to_end(tiny_sample_cfg, tmp_path):
    cfg = tiny_sample_cfg(
        *TINY_TRAIN,
        "demo.students=[lightgbm,xgboost,bi_encoder,multi_vector,sparse]",
        *TINY_NEURAL,
        *TINY_GBDT,
        "evaluate.latency_queries=3",
        "evaluate.load.duration_s=5",
    )
    metrics = run_demo(cfg)
    ws = Path(cfg.paths.workspace)
    saved = json.loads((ws / "metrics.json").read_text())
    assert set(saved["rankers"]) == {
        "bm25",
        "bm25_wordpiece",
        "teacher",
        "lightgbm",
        "lightgbm_stack",
        "xgboost",
        "bi_encoder_kl",
        "bi_encoder_kl+bm25",
        "multi_vector_kl",
        "sparse_kl",
    }
    assert set(saved["retrievers"]) == {"bm25", "bi_encoder_kl", "multi_vector_kl", "sparse_kl"}
    check_against_references(cfg, saved, tmp_path)
    for name, m in saved["rankers"].items():
        if name not in ("bm25", "bm25_wordpiece"):  # the lexical baselines are not timed
            assert m["ms_per_query"] > 0
    assert metrics["rankers"]["bm25"] == saved["rankers"]["bm25"]
    policies = saved["cascade"]["policies"]
    assert {p["policy"] for p in policies} == {"static", "dynamic"}
    report = (ws / "report.md").read_text()
    assert "## Cascade" in report and "| bi_encoder_kl |" in report
    for png in ("pareto.png", "teacher_vs_student.png", "gain_hist.png"):
        assert (ws / "plots" / png).stat().st_size > 1000
    # a re-run skips every stage whose config and inputs are unchanged, and gives the same figures
    again = run_demo(cfg)
    assert set(again["stage_seconds"].values()) == {"skipped"} and len(again["stage_seconds"]) == 10
    assert {k: v["ndcg@10"] for k, v in again["rankers"].items()} == {
        k: v["ndcg@10"] for k, v in saved["rankers"].items()
    }
    # a changed stage option re-runs that stage and what depends on it, nothing before it
    changed = run_demo(tiny_changed(cfg))
    ran = {k for k, v in changed["stage_seconds"].items() if v != "skipped"}
    assert ran == {"train-student-lightgbm", "train-student-xgboost", "train-student-lightgbm_stack"}


def subword_bm25_reference(cfg, cands, tmp_path):
    """BM25 (bm25s's Lucene form: idf x tf / (tf + k1 (1 - b + b dl / avgdl))) over the pieces of the corpus's
    own vocabulary (the teacher's, built again without the words it took from the training queries), written out
    term by term."""
    import math
    from collections import Counter

    from transformers import AutoTokenizer

    from distill.data.prepare import load_dataset
    from distill.teacher.train import TeacherTrainConfig, build_scratch_model, train_texts
    from distill.workspace import Workspace

    ds = load_dataset(cfg)
    teacher = AutoTokenizer.from_pretrained(Workspace.from_cfg(cfg).model("teacher"))
    tc = TeacherTrainConfig.from_cfg({**cfg.teacher.train, "translate_min_queries": 0})
    tok = AutoTokenizer.from_pretrained(build_scratch_model(train_texts(ds), tc, tmp_path / "corpus_vocab"))
    # the teacher took words from the training queries, which the corpus's vocabulary splits
    assert len(teacher) > len(tok)
    docs = dict(zip(ds.corpus.index, (Counter(tok.tokenize(t)) for t in ds.doc_texts(ds.corpus.index))))
    n, avg = len(docs), sum(sum(c.values()) for c in docs.values()) / len(docs)
    df = Counter(t for c in docs.values() for t in c)
    k1, b = cfg.retrieval.k1, cfg.retrieval.b
    out = []
    for qid, docid in zip(cands.qid, cands.docid):
        tf, dl = docs[docid], sum(docs[docid].values())
        out.append(
            sum(
                math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                * tf[t]
                / (tf[t] + k1 * (1 - b + b * dl / avg))
                for t in tok.tokenize(ds.queries.text[qid])
                if t in tf
            )
        )
    return out


def check_against_references(cfg, saved, tmp_path):
    """The demo's figures recomputed independently: BM25's from `make candidates`' own metrics, the teacher's from
    its soft labels, LightGBM's from the library's Booster.predict on features.parquet, and each ranker's
    recovered share from those."""
    import lightgbm as lgb
    import pandas as pd
    import pytest

    from distill.data.prepare import load_dataset
    from distill.ir.metrics import evaluate
    from distill.teacher.soft_labels import read_soft_labels

    ws = Path(cfg.paths.workspace)
    r = saved["rankers"]
    assert r["bm25"]["ndcg@10"] == pytest.approx(
        json.loads((ws / "candidates_metrics.json").read_text())["bm25"]["test"]["ndcg@10"]
    )
    qrels = load_dataset(cfg).qrels["test"]
    cands = pd.read_parquet(ws / "candidates.parquet").query("split == 'test'")
    soft = read_soft_labels(ws / "soft_labels").merge(cands[["qid", "docid"]], on=["qid", "docid"])
    assert r["teacher"]["ndcg@10"] == pytest.approx(
        evaluate(qrels, soft[["qid", "docid", "score"]])["ndcg@10"]
    )
    assert r["bm25_wordpiece"]["ndcg@10"] == pytest.approx(
        evaluate(qrels, cands[["qid", "docid"]].assign(score=subword_bm25_reference(cfg, cands, tmp_path)))[
            "ndcg@10"
        ]
    )
    feats = pd.read_parquet(ws / "features.parquet").query("split == 'test'")
    names = json.loads((ws / "models" / "lightgbm" / "features.json").read_text())
    pred = lgb.Booster(model_file=str(ws / "models" / "lightgbm" / "model.txt")).predict(
        feats[names].to_numpy("float32")
    )
    assert r["lightgbm"]["ndcg@10"] == pytest.approx(
        evaluate(qrels, feats[["qid", "docid"]].assign(score=pred))["ndcg@10"]
    )
    gain = r["teacher"]["ndcg@10"] - r["bm25"]["ndcg@10"]
    for name, m in r.items():
        if name in ("bm25", "teacher"):
            continue
        if gain > 1e-9:
            assert m["recovered"] == pytest.approx((m["ndcg@10"] - r["bm25"]["ndcg@10"]) / gain)
        else:  # a teacher no better than BM25 has no gain to recover
            assert m["recovered"] is None


def tiny_changed(cfg):
    from omegaconf import open_dict

    c = cfg.copy()
    with open_dict(c):
        c.demo.overrides.lightgbm.num_trees = 11
        c.demo.overrides.xgboost.num_trees = 11
    return c


def test_demo_with_your_own_teacher_on_a_beir_folder(tiny_sample_cfg, make_cfg, tiny_model_dir, tmp_path):
    """`make demo ARGS="data=beir data.path=DIR teacher.model=FOLDER"`: no train-teacher; candidates, scoring with
    that teacher, features, the students (starting from that teacher) and evaluation, end to end."""
    from distill.data.prepare import dataset_dir

    folder = dataset_dir(tiny_sample_cfg())  # any folder in BEIR layout
    cfg = make_cfg(
        "data=beir",
        f"data.path={folder}",
        f"teacher.model={tiny_model_dir}",
        "teacher.max_length=64",
        "retrieval.k=10",
        "demo.students=[lightgbm,bi_encoder]",
        "demo.stack=[]",
        "++demo.overrides.bi_encoder.embedding_dim=16",
        "++demo.overrides.bi_encoder.max_seconds=20",
        "++demo.overrides.bi_encoder.negatives=3",
        "++demo.overrides.bi_encoder.negative_margin=null",
        "+demo.overrides.lightgbm.num_trees=10",
        "evaluate.latency_queries=3",
        "evaluate.load.duration_s=5",
    )
    metrics = run_demo(cfg)
    assert list(metrics["stage_seconds"]) == [
        "candidates",
        "teacher-score",
        "features",
        "train-student-lightgbm",
        "train-student-bi_encoder",
    ]
    assert {"bm25", "teacher", "lightgbm", "bi_encoder_kl"} <= set(metrics["rankers"])
    ws = Path(cfg.paths.workspace)
    info = json.loads((ws / "models" / "bi_encoder" / "kl" / "distill_train.json").read_text())
    assert info["started_from"] == str(tiny_model_dir)
    manifest = json.loads((ws / "soft_labels" / "manifest.json").read_text())
    assert manifest["identity"]["teachers"][0]["id"] == str(tiny_model_dir)


def test_the_stacked_lightgbm_takes_demo_stack_overrides_over_the_lightgbm_ones(make_cfg):
    import pytest

    from distill.demo import plan
    from distill.errors import ConfigError
    from distill.students.stage import STAGE as TRAIN_STUDENT

    cfg = make_cfg("+demo.overrides.lightgbm.num_trees=10", "+demo.overrides.lightgbm.num_leaves=63")
    steps = [c for stage, c in plan(cfg) if stage is TRAIN_STUDENT]
    (alone, stack) = (c.student for c in steps if c.student.name == "lightgbm")
    assert (
        list(steps[-1].features.students) == ["bi_encoder_kl", "bi_encoder_kl+bm25"]
        and steps[-1].student is stack
    )
    # LightGBM alone: its own options (its YAML's temperature 2); the stack: the demo's (temperature 1)
    assert (alone.num_trees, alone.num_leaves, alone.labels.alpha, alone.temperature) == (10, 63, 1.0, 2.0)
    assert (
        stack.num_trees,
        stack.num_leaves,
        stack.min_data_in_leaf,
        stack.labels.alpha,
        stack.temperature,
    ) == (
        10,
        7,
        100,
        0.5,
        1.0,
    )
    with pytest.raises(
        ConfigError,
        match=r"^demo.stack_overrides.num_leafs: no such option of LightGBMConfig; known: \[.*'num_leaves'",
    ):
        plan(make_cfg("+demo.stack_overrides.num_leafs=3"))
    with pytest.raises(
        ConfigError,
        match=r"^demo.overrides.lightgbm.labels.alpha: Value 'high' of type 'str' could not be conv",
    ):
        plan(make_cfg("+demo.overrides.lightgbm.labels.alpha=high"))
