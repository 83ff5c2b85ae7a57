"""The multi-vector (ColBERT) and sparse (SPLADE) students: their scoring against hand-computed cases and against
sentence-transformers' own similarity, and a tiny end-to-end training per student whose folder loads in plain
sentence-transformers and through the student contract."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import sparse as sp

from distill.errors import ConfigError
from distill.students.base import Context, load_scorers
from distill.students.multi_vector import MaxSimIndex, maxsim
from distill.students.schema import MultiVectorConfig, SparseConfig
from distill.students.sparse import _rerank, active_terms, index_bytes
from distill.students.stage import run as run_student
from distill.workspace import Workspace
from tests.helpers import TINY_TEACHER, scored_by_tiny_teacher


def test_maxsim_hand_computed():
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    d1 = np.array([[1.0, 0.0], [0.5, 0.5]])  # token 1: max(1, .5) = 1; token 2: max(0, .5) = .5
    d2 = np.array([[0.0, 1.0]])  # token 1: 0; token 2: 1
    got = maxsim(q, np.concatenate([d1, d2]), np.array([0, 2]))
    np.testing.assert_allclose(got, [1.5, 1.0])


def test_maxsim_index_search_equals_brute_force_across_chunks():
    rng = np.random.default_rng(0)
    docs = [rng.normal(size=(int(n), 4)).astype(np.float32) for n in rng.integers(0, 6, size=23)]
    queries = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(5)]
    index = MaxSimIndex([f"d{i}" for i in range(23)], docs, 4)
    scores, rows = index.search(queries, k=7, docs_per_chunk=4)
    for q, s, r in zip(queries, scores, rows, strict=True):
        brute = np.array(
            [(q @ d.astype(np.float16).astype(np.float32).T).max(1).sum() if len(d) else 0.0 for d in docs]
        )
        np.testing.assert_allclose(s, np.sort(brute)[::-1][:7], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(brute[r], s, rtol=1e-5, atol=1e-5)
    assert index.bytes_per_doc == (sum(max(len(d), 1) for d in docs) * 4 * 2 + 23 * 8) / 23


def test_sparse_rerank_and_sizes_hand_computed():
    q = sp.csr_matrix(np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]], np.float32))
    d = sp.csr_matrix(np.array([[0.5, 1.0, 0.0], [0.0, 0.0, 4.0]], np.float32))
    got = _rerank(q, np.array([0, 0, 1, 1]), d, np.array([0, 1, 0, 1]))
    np.testing.assert_allclose(got, [0.5, 8.0, 3.0, 0.0])
    assert active_terms(d) == 1.5 and index_bytes(d) == 3 * 4 + 3 * 4 + 3 * 4


def test_lexical_head_starts_splade_as_the_texts_own_words_weighted_by_idf(tiny_model_dir):
    """A new MLM head on an encoder without one: after `lexical_head`, a text's active SPLADE terms are its own
    tokens, weighted like their IDF, and special tokens never activate (a random head activates a large share of
    the vocabulary)."""
    import torch
    from scipy.stats import spearmanr
    from sentence_transformers.base.modules import Transformer

    from distill.students.sparse import idf, lexical_head

    words = [
        "the",
        "cat",
        "sat",
        "on",
        "mat",
        "dogs",
        "chase",
        "cats",
        "in",
        "park",
        "stock",
        "markets",
        "fell",
        "today",
        "salmon",
        "swim",
    ]
    texts = [" ".join(words[j] for j in (i % 16, (3 * i) % 16, (5 * i + 1) % 16, 0)) for i in range(40)]
    torch.manual_seed(0)
    mlm = Transformer(str(tiny_model_dir), transformer_task="fill-mask", max_seq_length=32)
    tok = mlm.tokenizer
    vocab = mlm.model.get_output_embeddings().out_features
    weights = idf(tok, texts, 32, vocab)

    def splade(texts):
        enc = tok(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = mlm.model(**enc).logits
        w = torch.log1p(torch.relu(logits)) * enc["attention_mask"][..., None]
        return w.max(dim=1).values, enc["input_ids"]

    before, _ = splade(texts[:8])
    lexical_head(
        mlm.model, tok, [texts, ["delta", "alpha1 gamma2"]], weights, steps=150, max_length=32, seed=0
    )
    after, ids = splade(texts[:8])
    assert (after > 0).sum(1).float().mean() < (before > 0).sum(1).float().mean()
    assert after[:, tok.all_special_ids].max() == 0
    own, got, want = 0.0, [], []
    for w, row in zip(after, ids, strict=True):
        mine = sorted(set(row.tolist()) - set(tok.all_special_ids))
        top = set(torch.topk(w, len(mine)).indices.tolist())
        own += len(top & set(mine)) / len(mine)
        got += w[mine].tolist()
        want += weights[mine].tolist()
    assert own / len(after) > 0.7
    assert spearmanr(got, want)[0] > 0.5


@pytest.mark.parametrize("pooling", ["max", "sum"])
def test_expansion_gradient_leaves_vectors_as_they_are_and_reaches_absent_terms(pooling):
    """With `let_terms_expand`, SpladePooling's vectors are unchanged, and a term no position activates gets
    `slope` times its gradient (autograd through log1p above 0 and a line of that slope below, at the max logit
    or at every position); the plain module gives it none."""
    import torch
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    from distill.students.sparse import let_terms_expand

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    logits[0, :, 3] = -torch.rand(5) - 0.1  # term 3 is off everywhere in text 0
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    upstream = torch.randn(2, 7)

    def pooled(pool, x):
        pool.train()
        return pool({"token_embeddings": x, "attention_mask": mask})["sentence_embedding"]

    plain_x = logits.clone().requires_grad_(True)
    plain = pooled(SpladePooling(pooling_strategy=pooling), plain_x)
    (plain * upstream).sum().backward()
    leaky_pool = SpladePooling(pooling_strategy=pooling)
    let_terms_expand(leaky_pool, 0.25)
    leaky_x = logits.clone().requires_grad_(True)
    leaky = pooled(leaky_pool, leaky_x)
    (leaky * upstream).sum().backward()
    torch.testing.assert_close(leaky, plain)

    ref_x = logits.clone().requires_grad_(True)
    real = mask.bool()[..., None]

    def reference(x):  # log1p above 0, a line of slope 0.25 below
        return torch.where(x > 0, torch.log1p(x.clamp(min=0)), 0.25 * x)

    if pooling == "max":
        ref = reference(ref_x.masked_fill(~real, float("-inf")).amax(dim=1))
    else:
        ref = (reference(ref_x) * real).sum(dim=1)
    (ref * upstream).sum().backward()
    torch.testing.assert_close(leaky_x.grad, ref_x.grad)
    assert plain_x.grad[0, :, 3].abs().max() == 0 and leaky_x.grad[0, :, 3].abs().max() > 0
    assert leaky_x.grad[0, 3:].abs().max() == 0  # padding gets none
    leaky_pool.eval()
    torch.testing.assert_close(
        leaky_pool({"token_embeddings": logits, "attention_mask": mask})["sentence_embedding"], plain.detach()
    )


def test_idf_hand_computed(tiny_model_dir):
    """BM25's IDF of each vocabulary term over the documents as the model tokenises them; special tokens 0."""
    from transformers import AutoTokenizer

    from distill.students.sparse import idf

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    docs = ["a b", "a c", "a"]
    w = idf(tok, docs, 32, len(tok))
    (a,), (b,) = (
        tok("a", add_special_tokens=False)["input_ids"],
        tok("b", add_special_tokens=False)["input_ids"],
    )
    assert w[a] == pytest.approx(np.log1p((3 - 3 + 0.5) / 3.5))
    assert w[b] == pytest.approx(np.log1p((3 - 1 + 0.5) / 1.5))
    assert w[tok.all_special_ids].max() == 0


def test_the_loss_sees_the_started_models_scores_at_the_labels_spread(tiny_sample_cfg):
    """The scale the loss divides scores by is the started model's own spread over the labels': its scores, scaled,
    spread as the labels do. (Worked out from the IDF weights the head is taught, it was 20 times off on the sample
    world: the model's weights come out larger and it switches on related terms.)"""
    from distill.data.prepare import load_dataset
    from distill.students.neural import teacher_base
    from distill.students.sparse import SPREAD_QUERIES, _new_model, encode, label_spread

    scored_by_tiny_teacher(tiny_sample_cfg)
    cfg = tiny_sample_cfg(
        *TINY_TEACHER, "student=sparse", "student.head_init_steps=30", "student.max_length=48"
    )
    ws, ds = Workspace.from_cfg(cfg), load_dataset(cfg)
    sc = SparseConfig.from_cfg(cfg.student)
    model = _new_model(sc, ws, ds, teacher_base(cfg, ws, sc.name))
    cands = pd.read_parquet(ws.candidates)
    lists = cands[(cands.split == "train") & (cands["rank"] <= sc.negative_depth)]
    lists = lists[lists.qid.isin(sorted(set(lists.qid))[:SPREAD_QUERIES])]
    # the reference: sentence-transformers' own encodings as dense arrays, NumPy's dot products and deviations
    qids, dids = list(lists.qid.unique()), list(lists.docid.unique())
    q = encode(model, ds.queries.loc[qids, "text"].tolist(), True).toarray()
    d = encode(model, ds.doc_texts(dids), False).toarray()
    scores = (q[[qids.index(x) for x in lists.qid]] * d[[dids.index(x) for x in lists.docid]]).sum(axis=1)
    spread = np.median([np.std(scores[(lists.qid == x).to_numpy()], ddof=1) for x in qids])
    assert spread > 0
    assert spread / model.distill_score_scale == pytest.approx(label_spread(ws, sc, lists), rel=1e-4)


def test_bad_options():
    with pytest.raises(ConfigError, match=r"student.loss='mse': use one of \('margin_mse', 'kl'\)"):
        MultiVectorConfig.from_cfg({"loss": "mse"})
    with pytest.raises(ConfigError, match="student.dim=0: must be > 0"):
        MultiVectorConfig.from_cfg({"dim": 0})
    with pytest.raises(ConfigError, match="student.document_regularizer_weight=-1.0: must be >= 0"):
        SparseConfig.from_cfg({"document_regularizer_weight": -1.0})
    with pytest.raises(ConfigError, match="student.pooling='mean': use max or sum"):
        SparseConfig.from_cfg({"pooling": "mean"})
    with pytest.raises(ConfigError, match="student.expansion_gradient=-0.1: must be >= 0"):
        SparseConfig.from_cfg({"expansion_gradient": -0.1})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['flops'\]"):
        SparseConfig.from_cfg({"flops": 1})


TINY_STUDENT = [
    "student.negatives=3",
    "student.negative_margin=null",
    "student.samples_per_positive=3",
    "student.max_length=48",
    "student.batch_size=16",
    "student.epochs=2",
    "student.lr=2e-3",
]


@pytest.mark.parametrize(
    "student,loss,cls,extra",
    [
        ("multi_vector", "kl", "MultiVectorEncoder", ["student.document_length=48", "student.dim=16"]),
        (
            "multi_vector",
            "margin_mse",
            "MultiVectorEncoder",
            ["student.document_length=48", "student.dim=16"],
        ),
        ("sparse", "kl", "SparseEncoder", []),  # sum pooling
        ("sparse", "margin_mse", "SparseEncoder", ["student.pooling=max", "student.expansion_gradient=0.1"]),
    ],
)
def test_tiny_end_to_end(tiny_sample_cfg, student, loss, cls, extra):
    import sentence_transformers

    scored_by_tiny_teacher(tiny_sample_cfg)
    cfg = tiny_sample_cfg(*TINY_TEACHER, f"student={student}", f"student.loss={loss}", *TINY_STUDENT, *extra)
    info = run_student(cfg)
    assert info["steps"] > 0 and info["probe_loss_after"] < info["probe_loss_before"]
    ws = Workspace.from_cfg(cfg)
    out = ws.model(student) / loss
    assert json.loads((out / "distill_train.json").read_text())["steps"] == info["steps"]
    for mode in ("rerank", "retrieve"):
        assert 0 <= info["test"][mode]["ndcg@10"] <= 1
    assert info["test"]["retrieve"]["index_bytes_per_doc"] > 0

    # the folder is a plain sentence-transformers model; the contract's scorer agrees with its own similarity
    model = getattr(sentence_transformers, cls)(str(out), device="cpu")
    if student == "sparse":  # the pooling it was trained with, saved as the plain module
        assert model[-1].pooling_strategy == ("max" if "student.pooling=max" in extra else "sum")
        assert type(model[-1]).__name__ == "SpladePooling"
    cands = pd.read_parquet(ws.candidates)
    from distill.data.prepare import load_dataset

    ds = load_dataset(cfg)
    (scorer,) = load_scorers(out, Context(ds, ws, cands))
    assert scorer.name == f"{student}_{loss}"
    one = cands[cands.qid == cands.qid.iloc[0]].head(5)
    q = model.encode_query([ds.queries.loc[one.qid.iloc[0], "text"]])
    d = model.encode_document(ds.doc_texts(list(one.docid)))
    expected = model.similarity(q, d).cpu().float().numpy().ravel()
    np.testing.assert_allclose(scorer.score(one), expected, rtol=1e-4, atol=1e-4)
    run, facts = scorer.search([one.qid.iloc[0]], 5)
    assert len(run) == 5 and facts["index_bytes_per_doc"] > 0
