import json

import numpy as np
import pandas as pd
import pytest

from distill.data.prepare import load_dataset
from distill.errors import ConfigError, DataError
from distill.retrieval.candidates import run as run_candidates
from distill.teacher.importers import import_flagembedding
from distill.teacher.model import load_teacher
from distill.teacher.scoring import run as run_score
from distill.teacher.soft_labels import read_soft_labels
from distill.teacher.train import TeacherTrainConfig, build_lists
from distill.teacher.train import run as run_train

TINY_TRAIN = [
    "teacher.train.vocab_size=300",
    "teacher.train.hidden_size=32",
    "teacher.train.num_layers=1",
    "teacher.train.num_heads=2",
    "teacher.train.intermediate_size=64",
    "teacher.train.epochs=1",
    "teacher.train.max_length=48",
    "teacher.train.negatives=3",
    "teacher.max_length=48",
    "teacher.batch_tokens=1024",
    "retrieval.k=10",
]


def test_train_teacher_end_to_end_then_score_with_it(tiny_sample_cfg):
    cfg = tiny_sample_cfg(*TINY_TRAIN)
    run_candidates(cfg)
    info = run_train(cfg)
    assert info["steps"] > 0 and np.isfinite(info["train_loss"])
    model_dir = f"{cfg.paths.workspace}/models/teacher"
    ce = load_teacher(model_dir, max_length=48, device="cpu")  # a normal Hugging Face folder
    assert ce.num_labels == 1
    s = run_score(cfg)  # teacher.model=trained resolves to it
    assert s["scored"] == s["pairs"] > 0
    assert (
        len(read_soft_labels(__import__("pathlib").Path(cfg.paths.workspace) / "soft_labels")) == s["pairs"]
    )


def test_train_teacher_twice_gives_the_same_model(tiny_sample_cfg, tmp_path):
    from pathlib import Path

    cfg_a = tiny_sample_cfg(*TINY_TRAIN, f"paths.workspace={tmp_path / 'a'}")
    cfg_b = tiny_sample_cfg(*TINY_TRAIN, f"paths.workspace={tmp_path / 'b'}")
    run_candidates(cfg_a)
    run_candidates(cfg_b)
    a, b = run_train(cfg_a), run_train(cfg_b)
    assert a["steps"] == b["steps"] and a["train_loss"] == b["train_loss"]
    weights = [
        (Path(c.paths.workspace) / "models/teacher/model.safetensors").read_bytes() for c in (cfg_a, cfg_b)
    ]
    assert weights[0] == weights[1]


def test_build_lists_hand_example(tiny_beir, make_cfg):
    ds = load_dataset(make_cfg("data=beir", f"data.path={tiny_beir()}"))
    cands = pd.DataFrame(
        {"qid": ["q1"] * 4, "docid": ["d3", "d1", "d4", "d2"], "rank": [1, 2, 3, 4], "split": ["train"] * 4}
    )
    ds.qrels["train"] = ds.qrels.pop("test")
    lists = build_lists(ds, cands, negatives=2, seed=0)
    # one list per positive, best grade first; negatives are unjudged candidates (d3, d4)
    assert lists.docs.tolist()[0][0] == "d1" and lists.labels.tolist()[0][0] == 2.0
    assert lists.docs.tolist()[1][0] == "d2" and lists.labels.tolist()[1][0] == 1.0
    assert all(
        set(d[1:]) == {"d3", "d4"} and lab[1:] == [0.0, 0.0] for d, lab in zip(lists.docs, lists.labels)
    )


def test_teacher_train_config_errors():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lr_rate'\]"):
        TeacherTrainConfig.from_cfg({"lr_rate": 1})
    with pytest.raises(ConfigError, match="teacher.train.loss='hinge'"):
        TeacherTrainConfig.from_cfg({"loss": "hinge"})
    with pytest.raises(ConfigError, match="teacher.train.init='xavier': use match or random"):
        TeacherTrainConfig.from_cfg({"init": "xavier"})


def test_scratch_tokenizer_is_the_same_every_run_and_spells_unknown_words(tmp_path):
    from transformers import AutoTokenizer

    from distill.teacher.train import build_scratch_model, wordpiece_vocab

    texts = ["The cat sat on the mat.", "Dogs chase the cat!", "the dog"]
    vocab = wordpiece_vocab(texts, 100)
    # specials, then every character twice, then words by count (the: 4, cat: 2), ties alphabetical
    chars = sorted(set("thecatsaonmdogsh.!"))
    assert list(vocab)[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert list(vocab)[5 : 5 + 2 * len(chars)] == chars + [f"##{c}" for c in chars]
    assert list(vocab)[5 + 2 * len(chars) :][:4] == ["the", "cat", "chase", "dog"]
    assert list(wordpiece_vocab(texts, 5 + 2 * len(chars) + 2))[-2:] == ["the", "cat"]  # cut at the size
    tc = TeacherTrainConfig(vocab_size=100, hidden_size=16, num_layers=1, num_heads=1, intermediate_size=32)
    a = build_scratch_model(texts, tc, tmp_path / "a")
    b = build_scratch_model(texts, tc, tmp_path / "b")
    for name in ("tokenizer.json", "model.safetensors"):  # the same texts and seed give the same files
        assert (a / name).read_bytes() == (b / name).read_bytes()
    tok = AutoTokenizer.from_pretrained(a)
    # an unknown word: its longest known prefix, then characters
    assert tok.tokenize("cats chased") == ["cat", "##s", "chase", "##d"]
    with pytest.raises(ConfigError, match=r"teacher.train.vocab_size=10 is too small .* at least 31"):
        wordpiece_vocab(texts, 10)


def test_match_init_makes_query_tokens_attend_to_their_copies_in_the_document():
    import torch
    from transformers import BertConfig, BertForSequenceClassification  # type: ignore[attr-defined]

    from distill.teacher.train import match_init

    torch.manual_seed(0)
    config = BertConfig(  # type: ignore[call-arg]
        vocab_size=100,
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=1,
        attn_implementation="eager",
    )
    model = BertForSequenceClassification(config).eval()
    match_init(model)
    # [CLS] q10 q11 [SEP] d12 d10 d13 d10 [SEP]: query token 10 occurs twice in the document, 11 never.
    ids = torch.tensor([[2, 10, 11, 3, 12, 10, 13, 10, 3]])
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        att = model(input_ids=ids, token_type_ids=types, output_attentions=True).attentions[0][0, 0]
    assert att[1, [5, 7]].sum() > 0.5  # q10 -> its two copies in the document
    assert att[2, 2] > 0.8  # q11 has no copy: it attends to itself
    assert att[5, 7] > 0.25 and att[5, 1] > 0.25  # a document token finds its copies in both segments


def test_import_flagembedding_sample(shared_data, tmp_path, make_cfg):
    summary = import_flagembedding(
        shared_data / "flagembedding_msmarco_sample" / "reranker_examples.jsonl", tmp_path / "soft_labels"
    )
    assert summary["queries"] == 10 and summary["pairs"] + summary["duplicates_dropped"] == 260
    sl = read_soft_labels(tmp_path / "soft_labels")
    assert sl.score.dtype == np.float32 and sl.score.between(50, 120).all()
    # ids join the converted dataset
    ds = load_dataset(make_cfg("data=flagembedding"))
    assert sl.qid.isin(ds.queries.index).all() and sl.docid.isin(ds.corpus.index).all()


def test_import_rejects_unscored_and_non_numeric(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps({"query": "q", "pos": ["a"], "neg": ["b"]}) + "\n")
    with pytest.raises(DataError, match=r"x.jsonl:1: no pos_scores"):
        import_flagembedding(f, tmp_path / "out")
    f.write_text(
        json.dumps({"query": "q", "pos": ["a"], "neg": ["b"], "pos_scores": ["high"], "neg_scores": [1.0]})
        + "\n"
    )
    with pytest.raises(DataError, match=r"x.jsonl:1: pos_scores holds 'high'"):
        import_flagembedding(f, tmp_path / "out2")
    f.write_text(
        json.dumps(
            {"query": "q", "pos": ["a"], "neg": ["b"], "pos_scores": [float("nan")], "neg_scores": [1.0]}
        ).replace("NaN", "NaN")
        + "\n"
    )
    with pytest.raises(DataError, match="non-finite score"):
        import_flagembedding(f, tmp_path / "out3")
