import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distill.data.prepare import load_dataset
from distill.errors import ConfigError, DataError, DistillError
from distill.retrieval.candidates import run as run_candidates
from distill.teacher.importers import import_soft_labels
from distill.teacher.model import load_teacher
from distill.teacher.scoring import run as run_score
from distill.teacher.soft_labels import read_soft_labels
from distill.teacher.train import TeacherTrainConfig, build_lists
from distill.teacher.train import run as run_train
from tests.helpers import TINY_TRAIN


def test_train_teacher_end_to_end_then_score_with_it(tiny_sample_cfg):
    cfg = tiny_sample_cfg(*TINY_TRAIN)
    run_candidates(cfg)
    info = run_train(cfg)
    assert info["steps"] == info["planned_steps"] > 0 and info["cut_by"] is None
    assert np.isfinite(info["train_loss"])
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
    with pytest.raises(ConfigError, match="teacher.train.init='xavier': use one of match, lexical, random"):
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
    tc = TeacherTrainConfig(
        vocab_size=100, hidden_size=16, num_layers=1, num_heads=1, intermediate_size=32, init="match"
    )
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


def test_lexical_init_ranks_as_idf_weighted_saturating_matches(tmp_path):
    """At init (no training), init=lexical scores a query's documents in the order of sum_t idf(t) * n_t / (s + n_t)
    over the query's tokens (n_t: occurrences in the document), the reference computed here with NumPy."""
    import torch
    from scipy.stats import spearmanr
    from transformers import AutoTokenizer, BertForSequenceClassification

    from distill.teacher.train import build_scratch_model, token_idf

    rng = np.random.default_rng(0)
    words = [a + b for a in ("ba", "ko", "mi", "tu", "ze", "ro") for b in ("l", "n", "x", "sh", "r")]
    zipf = 1.0 / np.arange(1, len(words) + 1)
    docs = [" ".join(rng.choice(words, size=rng.integers(8, 40), p=zipf / zipf.sum())) for _ in range(200)]
    tc = TeacherTrainConfig(init="lexical", saturation=1.5)
    folder = build_scratch_model(docs, tc, tmp_path / "lexical")
    again = build_scratch_model(docs, tc, tmp_path / "again")
    assert (folder / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()
    tok = AutoTokenizer.from_pretrained(folder)
    model = BertForSequenceClassification.from_pretrained(folder).eval()
    ids = [tok(d, add_special_tokens=False)["input_ids"] for d in docs]
    df = np.zeros(len(tok))
    for row in ids:
        df[list(set(row))] += 1
    idf = np.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
    idf[tok.all_special_ids] = 1e-3
    assert np.allclose(token_idf(tok, docs).numpy(), idf, rtol=1e-6)
    rhos = []
    for _ in range(20):
        query = " ".join(rng.choice(words, size=int(rng.integers(2, 5)), replace=False))
        qids = tok(query, add_special_tokens=False)["input_ids"]
        ref = np.array([sum(idf[t] * row.count(t) / (1.5 + row.count(t)) for t in qids) for row in ids])
        with torch.no_grad():
            x = tok([query] * len(docs), docs, padding=True, return_tensors="pt")
            got = model(**x).logits[:, 0].numpy()
        rhos.append(spearmanr(got, ref).statistic)
        assert docs[int(np.argmax(got))] in {docs[i] for i in np.flatnonzero(ref >= ref.max() - 0.05)}
    # the construction is approximate (LayerNorm, attention that is sharp but not exact)
    assert min(rhos) > 0.85 and np.mean(rhos) > 0.97, rhos


def _alias_world(seed=0):
    """Documents over corpus words, and queries that name a corpus word only by an alias no document holds,
    with training lists: the positive holds the alias's word, the negatives do not."""
    rng = np.random.default_rng(seed)
    words = [a + b for a in ("ba", "ko", "mi", "tu", "ze", "ro") for b in ("l", "n", "x", "sh", "r")]
    zipf = 1.0 / np.arange(1, len(words) + 1)
    # of one length, so that a ranker that matches nothing does not rank documents that hold a word first
    docs = [" ".join(rng.choice(words, size=24, p=zipf / zipf.sum())) for _ in range(200)]
    aliases = {"quipfo": "ror", "wexdam": "rosh", "yuvgot": "rox", "jofwig": "ron"}
    # a word in one training query only, and one that its positives and negatives hold alike
    rare, flat = "plimsy", "vorqat"
    lists = []
    for alias, word in aliases.items():
        holds = [d for d in docs if word in d.split()]
        lacks = [d for d in docs if word not in d.split()]
        for i in range(6):
            lists.append((f"{alias} {words[i]}", holds[i], lacks[4 * i : 4 * i + 4]))
    lists.append((rare, docs[0], docs[1:4]))
    lists += [(f"{flat} {words[0]}", docs[i], [docs[i]] * 3) for i in range(3)]
    return docs, aliases, rare, flat, lists


def test_translation_init_matches_an_alias_with_the_document_word_it_stands_for(tmp_path):
    """With teacher.train.translate_min_queries, a word only queries use becomes a token started as the document
    word it predicts in the training lists: before any training, a query holding only the alias ranks the
    documents as the query of its word does. Without it the alias matches nothing."""
    import functools

    import torch
    from scipy.stats import spearmanr
    from transformers import AutoTokenizer, BertForSequenceClassification

    from distill.teacher.train import build_scratch_model

    docs, aliases, rare, flat, lists = _alias_world()

    def read(tokenizer):
        def ids(text):
            return set(tokenizer(text, add_special_tokens=False)["input_ids"])

        return [(ids(q), ids(pos), [ids(n) for n in negs]) for q, pos, negs in lists]

    translate = ([q for q, _, _ in lists], read)

    @functools.cache
    def loaded(folder):
        return AutoTokenizer.from_pretrained(folder), BertForSequenceClassification.from_pretrained(
            folder
        ).eval()

    def scores(folder, query):
        tok, model = loaded(folder)
        with torch.no_grad():
            return (
                model(**tok([query] * len(docs), docs, padding=True, return_tensors="pt"))
                .logits[:, 0]
                .numpy()
            )

    on = build_scratch_model(
        docs, TeacherTrainConfig(translate_min_queries=2), tmp_path / "on", translate=translate
    )
    again = build_scratch_model(
        docs, TeacherTrainConfig(translate_min_queries=2), tmp_path / "again", translate=translate
    )
    off = build_scratch_model(
        docs, TeacherTrainConfig(translate_min_queries=0), tmp_path / "off", translate=translate
    )
    # the query words come beyond the corpus's vocabulary, even when it fills vocab_size
    small = build_scratch_model(
        docs, TeacherTrainConfig(vocab_size=60), tmp_path / "small", translate=translate
    )
    assert set(aliases) <= set(AutoTokenizer.from_pretrained(small).get_vocab())
    assert (on / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()
    vocab = AutoTokenizer.from_pretrained(on).get_vocab()
    assert set(aliases) | {flat} <= set(vocab) and rare not in vocab
    assert not set(aliases) & set(AutoTokenizer.from_pretrained(off).get_vocab())
    for alias, word in aliases.items():
        holds = np.array([word in d.split() for d in docs])

        def gap(folder, query, holds=holds):
            s = scores(folder, query)
            return s[holds].mean() - s[~holds].mean()

        assert spearmanr(scores(on, alias), scores(on, word)).statistic > 0.95
        assert holds[np.argsort(-scores(on, alias))[: holds.sum()]].all(), alias
        # how far the documents holding the word score above the others, against the word's own query
        assert gap(on, alias) > 0.8 * gap(on, word), alias
        assert abs(gap(off, alias)) < 0.2 * gap(off, word), alias
    # the word that tells positives from negatives no better than chance keeps its own embedding: it matches nothing
    assert np.ptp(scores(on, flat)) < 0.1 * np.ptp(scores(on, "ror"))


def test_lexical_init_refuses_shapes_it_cannot_build(tmp_path):
    from distill.teacher.train import build_scratch_model

    texts = ["the cat sat", "a dog ran"]
    with pytest.raises(
        ConfigError, match=r"init=lexical needs num_heads=1 and num_layers >= 2 \(got 2 and 2\)"
    ):
        build_scratch_model(texts, TeacherTrainConfig(init="lexical", num_heads=2), tmp_path / "a")
    with pytest.raises(
        ConfigError, match=r"init=lexical needs num_heads=1 and num_layers >= 2 \(got 1 and 1\)"
    ):
        build_scratch_model(texts, TeacherTrainConfig(init="lexical", num_layers=1), tmp_path / "b")
    with pytest.raises(ConfigError, match=r"teacher.train.hidden_size=16 is too small for init=lexical"):
        build_scratch_model(texts, TeacherTrainConfig(init="lexical", hidden_size=16), tmp_path / "c")
    build_scratch_model(
        texts, TeacherTrainConfig(init="lexical", hidden_size=24, intermediate_size=32), tmp_path / "d"
    )
    with pytest.raises(ConfigError, match=r"teacher.train.saturation=0.5: must be >= 1"):
        TeacherTrainConfig.from_cfg({"saturation": 0.5})


def test_import_flagembedding_sample(shared_data, tmp_path, make_cfg):
    from distill.data.prepare import dataset_dir

    cfg = make_cfg("data=flagembedding")
    summary = import_soft_labels(
        "flagembedding",
        shared_data / "flagembedding_msmarco_sample" / "reranker_examples.jsonl",
        tmp_path / "ws",
        dataset=dataset_dir(cfg),
    )
    assert summary["queries"] == 10 and summary["pairs"] + summary["duplicates_dropped"] == 260
    sl = read_soft_labels(tmp_path / "ws" / "soft_labels")
    assert sl.score.dtype == np.float32 and sl.score.between(50, 120).all()
    # ids join the converted dataset
    ds = load_dataset(cfg)
    assert sl.qid.isin(ds.queries.index).all() and sl.docid.isin(ds.corpus.index).all()


def test_import_rejects_unscored_and_non_numeric(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps({"query": "q", "pos": ["a"], "neg": ["b"]}) + "\n")
    with pytest.raises(DataError, match=r"x.jsonl:1: no pos_scores"):
        import_soft_labels("flagembedding", f, tmp_path / "out")
    f.write_text(
        json.dumps({"query": "q", "pos": ["a"], "neg": ["b"], "pos_scores": ["high"], "neg_scores": [1.0]})
        + "\n"
    )
    with pytest.raises(DataError, match=r"x.jsonl:1: pos_scores holds 'high'"):
        import_soft_labels("flagembedding", f, tmp_path / "out2")
    f.write_text(
        json.dumps(
            {"query": "q", "pos": ["a"], "neg": ["b"], "pos_scores": [float("nan")], "neg_scores": [1.0]}
        ).replace("NaN", "NaN")
        + "\n"
    )
    with pytest.raises(DataError, match=r"x.jsonl:1: score nan is not finite"):
        import_soft_labels("flagembedding", f, tmp_path / "out3")


def test_imported_trec_run_and_parquet_join_the_candidates_and_train_a_gbdt(tiny_sample_cfg, tmp_path):
    from distill.features.build import run as run_features
    from distill.students.gbdt import train_gbdt

    cfg = tiny_sample_cfg("retrieval.k=10", "student.num_trees=5", "student.min_data_in_leaf=2")
    run_candidates(cfg)
    cands = pd.read_parquet(f"{cfg.paths.workspace}/candidates.parquet")
    scores = (-cands["rank"].to_numpy() / 3.0).astype(np.float32)  # a teacher that agrees with BM25
    run_file = tmp_path / "reranker.run"
    lines = [
        f"{q} Q0 {d} {r} {s:.4f} rr" for q, d, r, s in zip(cands.qid, cands.docid, cands["rank"], scores)
    ]
    run_file.write_text("\n".join(lines + lines[:3]) + "\n")  # three repeated pairs are dropped
    ws = Path(cfg.paths.workspace)
    summary = import_soft_labels("trec-run", run_file, ws)
    assert summary["pairs"] == len(cands) and summary["duplicates_dropped"] == 3
    sl = read_soft_labels(ws / "soft_labels")
    assert np.allclose(sl.score.to_numpy(), scores, atol=1e-4)
    run_features(cfg)
    assert train_gbdt(cfg)["train_queries"] > 0

    pq = tmp_path / "scores.parquet"
    pd.DataFrame({"qid": cands.qid, "docid": cands.docid, "score": scores}).to_parquet(pq)
    data = Path(cfg.data.path)
    out = import_soft_labels("parquet", pq, tmp_path / "ws2", dataset=data)
    assert out["pairs"] == len(cands)
    pd.testing.assert_frame_equal(read_soft_labels(tmp_path / "ws2" / "soft_labels"), sl, atol=1e-4)
    with pytest.raises(DistillError, match="already holds soft labels"):
        import_soft_labels("parquet", pq, tmp_path / "ws2", dataset=data)


@pytest.mark.parametrize(
    "text, error",
    [
        ("q1 Q0 d1 1 0.5\n", r"run.txt:1: 5 fields; a TREC run line has 6"),
        ("q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 high t\n", r"run.txt:2: score 'high' is not a number"),
        ("q1 Q0 d1 1 inf t\n", r"run.txt:1: score inf is not finite"),
        ("q1 Q0 d1 1 0.5 t\nq1 Q0 d1 1 1e39 t\n", r"run.txt:2: score 1e\+39 is beyond float32's range"),
        (
            "q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 0.4 t\nq1 Q0 d1 3 0.7 t\n",
            r"run.txt:3: pair \('q1', 'd1'\) already scored differently at line 1",
        ),
    ],
)
def test_trec_run_import_errors_name_the_line(tmp_path, text, error):
    f = tmp_path / "run.txt"
    f.write_text(text)
    with pytest.raises(DataError, match=error):
        import_soft_labels("trec-run", f, tmp_path / "out")
    with pytest.raises(DataError, match="no such file"):
        import_soft_labels("trec-run", tmp_path / "missing.run", tmp_path / "out")


def _beir(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "corpus.jsonl").write_text('{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": "b"}\n')
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n')
    return root


def test_import_refuses_ids_the_dataset_lacks_or_drops_and_counts_them(tmp_path):
    data = _beir(tmp_path / "data")
    f = tmp_path / "run.txt"
    f.write_text("q1 Q0 d1 1 0.9 t\nq1 Q0 d404 2 0.5 t\nq9 Q0 d2 1 0.3 t\n")
    with pytest.raises(
        DataError, match=r"run.txt:2: docid 'd404' is not in the dataset .*\(2 pair\(s\) name ids it lacks\)"
    ):
        import_soft_labels("trec-run", f, tmp_path / "ws", dataset=data)
    assert not (tmp_path / "ws" / "soft_labels" / "manifest.json").exists()
    s = import_soft_labels("trec-run", f, tmp_path / "ws", dataset=data, drop_unknown=True)
    assert s["pairs"] == 1 and s["unknown_pairs_dropped"] == 2
    assert s["unknown_examples"] == [["q1", "d404", 2], ["q9", "d2", 3]]
    assert read_soft_labels(tmp_path / "ws" / "soft_labels").docid.tolist() == ["d1"]


def test_import_without_a_dataset_to_check_against_is_refused(tmp_path):
    f = tmp_path / "run.txt"
    f.write_text("q1 Q0 d1 1 0.9 t\n")
    with pytest.raises(DistillError, match=r"no candidates record names its dataset; give --dataset DIR"):
        import_soft_labels("trec-run", f, tmp_path / "ws")


def test_import_cli_one_line_for_a_file_that_is_not_parquet(tmp_path):
    import subprocess
    import sys

    from distill.config import PROJECT_ROOT

    data = _beir(tmp_path / "data")
    bad = tmp_path / "scores.parquet"
    bad.write_text("qid,docid,score\nq1,d1,0.5\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "distill.teacher.importers",
            "parquet",
            str(bad),
            str(tmp_path / "ws"),
            "--dataset",
            str(data),
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {bad}: not a readable Parquet file (ArrowInvalid); give one with qid, docid, score"
    ]


def test_import_a_chunk_at_a_time_equals_the_whole_and_checks_across_chunks(tmp_path):
    """Read 2 lines at a time: the same soft labels as in one chunk; a pair repeated in a later chunk is dropped
    (same score) or refused naming both lines; a refusal in the last chunk leaves no soft labels behind."""
    data = _beir(tmp_path / "data")
    (data / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n{"_id": "q2", "text": "y"}\n')
    lines = [
        "q1 Q0 d1 1 0.9 t",
        "q2 Q0 d2 1 0.5 t",
        "q1 Q0 d2 2 0.3 t",
        "q1 Q0 d404 3 0.1 t",
        "q1 Q0 d1 1 0.9 t",
    ]
    f = tmp_path / "run.txt"
    f.write_text("\n".join(lines) + "\n")
    whole = import_soft_labels("trec-run", f, tmp_path / "a", dataset=data, drop_unknown=True, chunk_rows=100)
    parts = import_soft_labels("trec-run", f, tmp_path / "b", dataset=data, drop_unknown=True, chunk_rows=2)
    assert (
        whole
        == parts
        == {
            "pairs": 3,
            "queries": 2,
            "duplicates_dropped": 1,
            "unknown_pairs_dropped": 1,
            "unknown_examples": [["q1", "d404", 4]],
        }
    )
    manifest = json.loads((tmp_path / "b" / "soft_labels" / "manifest.json").read_text())
    assert len(manifest["shards"]) == 2  # the last chunk held only a repeat: no part for it
    pd.testing.assert_frame_equal(
        read_soft_labels(tmp_path / "a" / "soft_labels"), read_soft_labels(tmp_path / "b" / "soft_labels")
    )
    f.write_text("\n".join([*lines[:3], "q2 Q0 d1 2 0.2 t", "q1 Q0 d1 1 0.7 t"]) + "\n")
    with pytest.raises(
        DataError, match=r"run.txt:5: pair \('q1', 'd1'\) already scored differently at line 1"
    ):
        import_soft_labels("trec-run", f, tmp_path / "c", dataset=data, chunk_rows=2)
    assert not (tmp_path / "c" / "soft_labels").exists() or not any(
        (tmp_path / "c" / "soft_labels").iterdir()
    )
    with pytest.raises(DistillError, match=r"--chunk-rows 0: give a whole number of pairs >= 1"):
        import_soft_labels("trec-run", f, tmp_path / "d", dataset=data, chunk_rows=0)


def test_parquet_import_read_in_chunks_names_the_row_in_the_file(tmp_path):
    data = _beir(tmp_path / "data")
    f = tmp_path / "scores.parquet"
    pd.DataFrame(
        {"qid": ["q1"] * 4, "docid": ["d1", "d2", "d1", "d2"], "score": [0.5, 0.25, 0.5, np.nan]}
    ).to_parquet(f)
    with pytest.raises(
        DataError, match=r"scores.parquet: 1 non-finite score\(s\) \(NaN/inf\), first at row 4 "
    ):
        import_soft_labels("parquet", f, tmp_path / "ws", dataset=data, chunk_rows=3)


@pytest.mark.parametrize("block", [1, 3, 1 << 18])
def test_pair_ledger_merges_chunks_in_place_into_the_sorted_pairs(monkeypatch, block):
    """Chunks of random keys, some repeated from earlier chunks with their score: the ledger holds each key once,
    sorted, with its first score, and counts the repeats, whatever the merge's block and however it grew."""
    from distill.teacher.importers import PairLedger

    monkeypatch.setattr(PairLedger, "MERGE_BLOCK", block)
    rng = np.random.default_rng(0)
    score_of = {int(k): np.float32(rng.normal()) for k in rng.choice(10_000, 2_000, replace=False)}
    pool = np.array(sorted(score_of))
    ledger, seen, dropped = PairLedger(capacity=3), set(), 0
    for _ in range(12):
        keys = rng.choice(pool, rng.integers(0, 300), replace=False)
        df = pd.DataFrame({"qid": "q", "docid": "d", "score": [score_of[int(k)] for k in keys], "line": 1})
        kept, again = ledger.add(df, keys, Path("x"), "parquet")
        assert again == sum(int(k) in seen for k in keys) and len(kept) == len(keys) - again
        seen |= {int(k) for k in keys}
        dropped += again
    assert ledger.keys.tolist() == sorted(seen)
    assert ledger.scores.tolist() == [score_of[k] for k in sorted(seen)]
    assert dropped > 0 and ledger.n == len(seen)
