import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distill.errors import ConfigError, DataError
from distill.students.examples import build_examples, label_list
from distill.students.schema import BiEncoderConfig
from distill.students.stage import run as run_student
from tests.helpers import TINY_TEACHER, scored_by_tiny_teacher

QUERIES = pd.DataFrame({"text": ["q one", "q two"]}, index=pd.Index(["q1", "q2"], name="_id"))
# q1: d1 judged relevant (teacher 3.0); d5 unjudged but scored 2.9, within the margin: a probable false negative.
SOFT = pd.DataFrame(
    {
        "qid": ["q1"] * 6 + ["q2"] * 3,
        "docid": ["d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9"],
        "score": [3.0, 1.0, 0.5, -1.0, 2.9, -2.0, 1.0, 0.0, -1.0],
    }
)
QRELS = pd.DataFrame({"qid": ["q1", "q1"], "docid": ["d1", "d6"], "relevance": [2, 0]})


def test_examples_hand_computed():
    bc = BiEncoderConfig(negatives=3, negative_depth=10, negative_margin=0.5, samples_per_positive=1)
    ex, skipped = build_examples(SOFT, QRELS, QUERIES, bc)
    # one example: d1 as positive; negatives d2, d3, d4 (d5 too close to the positive; d6 is judged, but
    # relevance 0 is not relevant, so it can be a negative: 4 candidates for 3 slots)
    assert len(ex) == 1 and ex.pos[0] == "d1"
    assert set(ex.negs[0]) <= {"d2", "d3", "d4", "d6"} and "d5" not in ex.negs[0]
    scores = dict(zip(SOFT.docid, SOFT.score, strict=True))
    assert ex.scores[0] == [3.0] + [scores[d] for d in ex.negs[0]]
    assert skipped == {"no_positive": 1, "too_few_negatives": 0}  # q2 has no judged positive


def test_zscore_labels_are_each_lists_standardised_scores():
    """`student.label_norm=zscore`: each example's teacher scores minus their mean, over their standard deviation
    (whatever the teacher's scale); raw keeps them as they are."""
    assert label_list([3.0, 1.0, -1.0]) == [3.0, 1.0, -1.0]
    z = label_list([3.0, 1.0, -1.0], "zscore")
    sd = np.std([3.0, 1.0, -1.0])
    np.testing.assert_allclose(z, [2 / sd, 0.0, -2 / sd], rtol=1e-5)
    np.testing.assert_allclose(label_list([30.0, 10.0, -10.0], "zscore"), z, rtol=1e-5)
    with pytest.raises(ConfigError, match="student.label_norm='minmax': use raw or zscore"):
        BiEncoderConfig(label_norm="minmax")


def test_examples_teacher_positives_depth_and_resampling():
    bc = BiEncoderConfig(
        positives="teacher", negatives=1, negative_depth=3, negative_margin=0.0, samples_per_positive=4
    )
    ex, skipped = build_examples(SOFT, QRELS, QUERIES, bc)
    # q1: top is d1 (3.0), depth 3 -> d5, d2; q2: top d7, negatives from d8, d9
    assert ex.groupby("qid").pos.first().to_dict() == {"q1": "d1", "q2": "d7"}
    assert len(ex) == 8 and skipped == {"no_positive": 0, "too_few_negatives": 0}
    assert set(ex[ex.qid == "q1"].negs.sum()) <= {"d5", "d2"}
    assert all(s[0] > s[1] for s in ex.scores)
    bc.negatives = 5
    ex, skipped = build_examples(SOFT, QRELS, QUERIES, bc)
    assert ex.empty and skipped["too_few_negatives"] == 2


def test_bad_input():
    with pytest.raises(DataError, match=r"1 qid\(s\) not among the dataset's queries \(first: \['q9'\]\)"):
        build_examples(
            pd.concat([SOFT, pd.DataFrame({"qid": ["q9"], "docid": ["d1"], "score": [0.0]})]),
            QRELS,
            QUERIES,
            BiEncoderConfig(),
        )
    with pytest.raises(ConfigError, match="student.loss='mse'"):
        BiEncoderConfig.from_cfg({"loss": "mse"})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['negativs'\]"):
        BiEncoderConfig.from_cfg({"negativs": 3})
    with pytest.raises(ConfigError, match=r"student.bm25_weight='best': use auto, null or a number"):
        BiEncoderConfig.from_cfg({"bm25_weight": "best"})


@pytest.mark.parametrize("loss,base", [("kl", "static"), ("margin_mse", "static"), ("margin_mse", "teacher")])
def test_tiny_end_to_end_lowers_loss_and_writes_a_loadable_model(tiny_sample_cfg, loss, base):
    from sentence_transformers import SentenceTransformer

    scored_by_tiny_teacher(tiny_sample_cfg)
    cfg = tiny_sample_cfg(
        *TINY_TEACHER,
        "student=bi_encoder",
        f"student.loss={loss}",
        f"student.base_model={base}",
        "student.negatives=3",
        "student.negative_margin=null",  # the tiny teacher barely ranks: keep every negative
        "student.samples_per_positive=3",
        "student.embedding_dim=32",
        "student.max_length=48",
        "student.lr=" + ("5e-2" if base == "static" else "1e-3"),
        "student.batch_size=16",
        "student.epochs=2",
    )
    info = run_student(cfg)
    assert info["probe_loss_after"] < info["probe_loss_before"]
    out = Path(cfg.paths.workspace) / "models" / "bi_encoder" / loss
    record = json.loads((out / "distill_train.json").read_text())
    assert record["steps"] == info["steps"] == record["planned_steps"] > 0 and record["cut_by"] is None
    model = SentenceTransformer(str(out), device="cpu")  # a normal sentence-transformers folder
    emb = model.encode(["a query", "a document"])
    assert emb.shape[0] == 2 and np.isfinite(emb).all()
    for mode in ("rerank", "rerank_bm25_hybrid", "dense"):
        assert 0 <= info["test"][mode]["ndcg@10"] <= 1
    hybrid = json.loads((out / "distill_hybrid.json").read_text())
    grid = hybrid["train_ndcg@10_by_weight"]
    assert grid[str(hybrid["bm25_weight"])] == max(grid.values())  # the weight with the best train nDCG@10


def test_same_seed_same_bi_encoder(tiny_sample_cfg):
    from sentence_transformers import SentenceTransformer

    scored_by_tiny_teacher(tiny_sample_cfg)
    cfg = tiny_sample_cfg(
        *TINY_TEACHER,
        "student=bi_encoder",
        "student.negatives=3",
        "student.negative_margin=null",
        "student.samples_per_positive=2",
        "student.embedding_dim=16",
        "student.batch_size=16",
    )
    out = Path(cfg.paths.workspace) / "models" / "bi_encoder" / "kl"
    texts = ["a query", "another document text"]
    first = [run_student(cfg)["probe_loss_after"], SentenceTransformer(str(out), device="cpu").encode(texts)]
    second = [run_student(cfg)["probe_loss_after"], SentenceTransformer(str(out), device="cpu").encode(texts)]
    assert first[0] == second[0]
    np.testing.assert_array_equal(first[1], second[1])


def test_a_time_guard_that_cuts_the_schedule_says_so_in_the_record_and_the_closing_line(
    tiny_sample_cfg, capsys
):
    scored_by_tiny_teacher(tiny_sample_cfg)
    cfg = tiny_sample_cfg(
        *TINY_TEACHER,
        "student=bi_encoder",
        "student.negatives=3",
        "student.negative_margin=null",
        "student.embedding_dim=16",
        "student.batch_size=8",
        "student.epochs=3",
        "student.max_seconds=1e-6",
    )
    info = run_student(cfg)
    record = json.loads((Path(cfg.paths.workspace) / "models/bi_encoder/kl/distill_train.json").read_text())
    assert record["steps"] == info["steps"] == 1 < record["planned_steps"]
    assert record["cut_by"] == "student.max_seconds"
    assert (
        f"(cut short by student.max_seconds at step 1 of {record['planned_steps']})"
        in capsys.readouterr().out
    )


@pytest.mark.parametrize("similarity,fn", [("dot", "dot"), ("cos", "cosine")])
def test_loaded_folder_scores_as_trained_and_as_sentence_transformers(tiny_sample_cfg, similarity, fn):
    """A folder scores with the similarity it was trained with: through this project's loader (evaluation,
    serving), the test nDCG@10 measured at training time is reproduced, and every score equals plain
    `SentenceTransformer(folder).similarity`, whose saved `similarity_fn_name` says the same."""
    from sentence_transformers import SentenceTransformer

    from distill.data.prepare import load_dataset
    from distill.ir.metrics import quality
    from distill.students.base import Context, load_scorers
    from distill.workspace import Workspace

    scored_by_tiny_teacher(tiny_sample_cfg)
    cfg = tiny_sample_cfg(
        *TINY_TEACHER,
        "student=bi_encoder",
        f"student.similarity={similarity}",
        "student.negatives=3",
        "student.negative_margin=null",
        "student.samples_per_positive=2",
        "student.embedding_dim=16",
        "student.batch_size=16",
        "student.bm25_weight=null",
    )
    info = run_student(cfg)
    ws, ds = Workspace.from_cfg(cfg), load_dataset(cfg)
    out = ws.model("bi_encoder") / "kl"
    test = pd.read_parquet(ws.candidates).query("split == 'test'").reset_index(drop=True)
    (scorer,) = load_scorers(out, Context.of(cfg, ds, ws, test))
    scores = scorer.score(test)
    assert quality(ds.qrels["test"], test[["qid", "docid"]].assign(score=scores))["ndcg@10"] == pytest.approx(
        info["test"]["rerank"]["ndcg@10"], abs=1e-9
    )
    model = SentenceTransformer(str(out), device="cpu")
    assert model.similarity_fn_name == fn
    q = model.encode(ds.queries.loc[test.qid, "text"].tolist(), convert_to_tensor=True)
    d = model.encode(ds.doc_texts(list(test.docid)), convert_to_tensor=True)
    np.testing.assert_allclose(scores, model.similarity_pairwise(q, d).numpy(), rtol=1e-4, atol=1e-5)


def test_a_student_starts_from_the_configured_teacher_not_only_the_trained_one(
    gbdt_ws, tiny_model_dir, tmp_path
):
    """base_model=teacher with teacher.model=FOLDER once stopped with "models/teacher not found"; the student
    now starts from that folder and says so. An LLM reranker has no encoder to start from: one line."""
    from distill.errors import ConfigError
    from distill.teacher.synthetic import build_llm_reranker

    common = ["student=bi_encoder", "student.base_model=teacher", "student.negatives=2", "student.negative_margin=null",
              "student.samples_per_positive=1", "student.bm25_weight=null", "student.max_length=32"]  # fmt: skip
    info = run_student(gbdt_ws(*common))
    assert info["started_from"] == str(tiny_model_dir) and info["steps"] > 0
    tiny = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, head_dim=16, vocab_size=100)  # fmt: skip
    llm = build_llm_reranker(tmp_path / "llm", ["a query", "a document"], **tiny)
    with pytest.raises(
        ConfigError, match=r"is a causal-LM reranker: it has no encoder a bi_encoder student can start from"
    ):
        run_student(gbdt_ws(*common, f"teacher.model={llm}"))


def test_labels_naming_a_document_the_corpus_lacks_are_refused():
    """Imported labels for unknown documents once became examples with an empty text."""
    corpus = pd.Index([f"d{i}" for i in range(1, 9)])  # d9 is not in it
    with pytest.raises(
        DataError,
        match=r"1 docid\(s\) not in the dataset's corpus \(first: \['d9'\]\): a student would learn from empty texts",
    ):
        build_examples(SOFT, QRELS, QUERIES, BiEncoderConfig(), corpus)
