"""The cross-encoder student: its data in each loss's shape on hand-computed cases, layer truncation, and a tiny
end-to-end training whose folder loads in plain `CrossEncoder(path)` and scores as its `predict` does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from distill.errors import ConfigError
from distill.students.base import Context, load_scorers
from distill.students.cross_encoder import dataset, keep_layers, labels_of
from distill.students.schema import CrossEncoderStudentConfig
from distill.students.stage import run as run_student
from distill.workspace import Workspace
from tests.helpers import TINY_TEACHER, scored_by_tiny_teacher


class TinyDs:
    queries = pd.DataFrame({"text": ["q one", "q two"]}, index=pd.Index(["q1", "q2"], name="_id"))

    @staticmethod
    def doc_texts(ids):
        return [f"text of {i}" for i in ids]


EX = pd.DataFrame(
    {
        "qid": ["q1", "q2"],
        "pos": ["a", "c"],
        "negs": [["b", "x"], ["d", "y"]],
        "scores": [[3.0, 1.0, -1.0], [2.0, 2.0, 5.0]],
    }
)


def test_labels_raw_zscore_and_label_scale():
    sc = CrossEncoderStudentConfig(label_scale=2.0)
    assert labels_of([3.0, 1.0, -1.0], sc) == [1.5, 0.5, -0.5]
    z = labels_of([3.0, 1.0, -1.0], CrossEncoderStudentConfig(label_norm="zscore"))
    np.testing.assert_allclose(z, np.array([2.0, 0.0, -2.0]) / np.sqrt(8 / 3), rtol=1e-5)
    # the same list at 10x the scale gives the same standardised labels
    np.testing.assert_allclose(
        labels_of([30.0, 10.0, -10.0], CrossEncoderStudentConfig(label_norm="zscore")), z, rtol=1e-5
    )


def test_dataset_shape_per_loss():
    d = dataset(TinyDs, EX, CrossEncoderStudentConfig(loss="margin_mse"))  # type: ignore[arg-type]
    assert d.column_names == ["query", "positive", "negative_1", "negative_2", "label"]
    assert d[1] == {
        "query": "q two",
        "positive": "text of c",
        "negative_1": "text of d",
        "negative_2": "text of y",
        "label": [2.0, 2.0, 5.0],
    }
    d = dataset(TinyDs, EX, CrossEncoderStudentConfig(loss="mse"))  # type: ignore[arg-type]
    assert len(d) == 6 and d[2] == {"query": "q one", "document": "text of x", "label": -1.0}
    d = dataset(TinyDs, EX, CrossEncoderStudentConfig(loss="listnet"))  # type: ignore[arg-type]
    assert d[0] == {
        "query": "q one",
        "docs": ["text of a", "text of b", "text of x"],
        "label": [3.0, 1.0, -1.0],
    }


def test_keep_layers():
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32
    )
    model = BertForSequenceClassification(cfg)
    first = model.bert.encoder.layer[0]
    assert keep_layers(model, 1) == 1 and model.config.num_hidden_layers == 1
    assert model.bert.encoder.layer[0] is first  # the first layers are kept, not new ones
    assert keep_layers(model, None) == 1
    model = BertForSequenceClassification(BertConfig(**{**cfg.to_dict(), "num_hidden_layers": 3}))
    last = model.bert.encoder.layer[2]
    assert keep_layers(model, 1, "last") == 1 and model.bert.encoder.layer[0] is last


def test_bad_options():
    with pytest.raises(
        ConfigError, match=r"student.loss='kl': use one of \('margin_mse', 'mse', 'listnet', 'lambdaloss'\)"
    ):
        CrossEncoderStudentConfig.from_cfg({"loss": "kl"})
    with pytest.raises(ConfigError, match="student.label_norm='minmax': use raw or zscore"):
        CrossEncoderStudentConfig.from_cfg({"label_norm": "minmax"})
    with pytest.raises(ConfigError, match="student.keep='middle': use first or last"):
        CrossEncoderStudentConfig.from_cfg({"keep": "middle"})
    with pytest.raises(ConfigError, match="student.layers=0: must be >= 1 or null"):
        CrossEncoderStudentConfig.from_cfg({"layers": 0})


@pytest.mark.parametrize("loss", ["margin_mse", "listnet"])
def test_tiny_end_to_end(tiny_sample_cfg, loss, monkeypatch):
    from sentence_transformers import CrossEncoder

    from distill.students import cross_encoder
    from tests.teacher.test_pairs import Recorder

    engines = []
    made = cross_encoder._scorer
    monkeypatch.setattr(
        cross_encoder, "_scorer", lambda *a, **kw: engines.append(made(*a, **kw)) or engines[-1]
    )

    from distill.data.prepare import load_dataset

    scored_by_tiny_teacher(tiny_sample_cfg)
    cfg = tiny_sample_cfg(
        *TINY_TEACHER,
        "student=cross_encoder",
        f"student.loss={loss}",
        "student.negatives=3",
        "student.negative_margin=null",
        "student.samples_per_positive=3",
        "student.max_length=48",
        "student.batch_size=8",
        "student.epochs=2",
        "student.lr=2e-3",
        "student.dtype=fp32",
        "student.base_model=scratch",  # the teacher's shape, fresh weights (a copy of the teacher has no loss)
    )
    info = run_student(cfg)
    assert info["steps"] > 0 and info["probe_loss_after"] < info["probe_loss_before"]
    assert 0 <= info["test"]["rerank"]["ndcg@10"] <= 1
    ws = Workspace.from_cfg(cfg)
    out = ws.model("cross_encoder") / loss
    ce = CrossEncoder(str(out), device="cpu", activation_fn=__import__("torch").nn.Identity())
    assert ce.model.config.num_hidden_layers == 1
    cands = pd.read_parquet(ws.candidates)
    ds = load_dataset(cfg)
    (scorer,) = load_scorers(out, Context(ds, ws, cands))
    assert scorer.name == f"cross_encoder_{loss}"
    rows = cands.head(12)
    pairs = list(zip(ds.queries.loc[rows.qid, "text"], ds.doc_texts(list(rows.docid)), strict=True))
    # the candidates' documents were tokenised when the scorer loaded (as an index holds them): a call
    # tokenises its queries only
    (engine,) = engines[-1:]
    assert len(engine.backend.kept) == len(set(ds.doc_texts(cands.docid.unique())))
    engine.backend.plain = recorder = Recorder(engine.backend.plain)
    np.testing.assert_allclose(scorer.score(rows), ce.predict(pairs), rtol=1e-4, atol=1e-5)
    assert set(recorder.seen) == {q for q, _ in pairs}


def test_lexical_options_are_checked():
    with pytest.raises(
        ConfigError, match=r"student.hidden_size=64: is for base_model=lexical; set it to null"
    ):
        CrossEncoderStudentConfig.from_cfg({"hidden_size": 64})
    with pytest.raises(ConfigError, match=r"student.hidden_size=16: must be >= 24"):
        CrossEncoderStudentConfig.from_cfg({"base_model": "lexical", "hidden_size": 16})
    with pytest.raises(ConfigError, match=r"student.layers=1: base_model=lexical needs 2 layers or more"):
        CrossEncoderStudentConfig.from_cfg({"base_model": "lexical", "layers": 1})


def test_small_preset_starts_lexical_at_its_own_shape(tiny_sample_cfg):
    """student=cross_encoder_small: a start built as the teacher's from-scratch start is (the same vocabulary),
    at the student's width; it ranks a document holding the query's words above one that does not before any
    training step; it trains, and its temporary start is gone; its stamp follows teacher.train."""
    from sentence_transformers import CrossEncoder

    from distill.data.prepare import load_dataset
    from distill.students.cross_encoder import lexical_start
    from distill.students.stage import STAGE
    from distill.teacher.schema import TeacherTrainConfig

    scored_by_tiny_teacher(tiny_sample_cfg)
    opts = [
        *TINY_TEACHER,
        "student=cross_encoder_small",
        "student.hidden_size=32",
        "student.intermediate_size=32",
    ]
    cfg = tiny_sample_cfg(*opts, "student.samples_per_positive=1", "student.dtype=fp32")
    ws, ds = Workspace.from_cfg(cfg), load_dataset(cfg)
    sc = CrossEncoderStudentConfig.from_cfg(cfg.student)
    assert (sc.base_model, sc.max_length) == ("lexical", 24)
    start = lexical_start(sc, ws, ds, TeacherTrainConfig.from_cfg(cfg.teacher.train), ws.root / "start")
    model = CrossEncoder(str(start), device="cpu", activation_fn=__import__("torch").nn.Identity())
    c = model.model.config
    assert (c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads) == (32, 32, 2, 1)
    teacher_tok = CrossEncoder(str(ws.model("teacher")), device="cpu").tokenizer
    assert model.tokenizer.get_vocab() == teacher_tok.get_vocab()
    # before training it is a lexical ranker: a query's own words beat words it does not hold
    queries = ds.queries.text.tolist()[:8]
    other = queries[::-1]
    held, not_held = model.predict(list(zip(queries, queries))), model.predict(list(zip(queries, other)))
    assert (held > not_held).all()

    info = run_student(cfg)
    assert info["steps"] > 0 and info["base_model"] == "lexical"
    folder = ws.model("cross_encoder_small")
    assert not list(folder.glob(".lexical-start-*"))
    trained = CrossEncoder(str(folder / "margin_mse"), device="cpu")
    assert (trained.model.config.hidden_size, trained.max_length) == (32, 24)

    def stamp(*more):
        return STAGE.config(tiny_sample_cfg(*opts, *more))

    assert stamp("teacher.train.saturation=2.0") != stamp()
    plain = [*TINY_TEACHER, "student=cross_encoder"]
    assert STAGE.config(tiny_sample_cfg(*plain, "teacher.train.saturation=2.0")) == STAGE.config(
        tiny_sample_cfg(*plain)
    )
