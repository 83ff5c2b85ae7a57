"""Pair ids from the tokenizer's backend (distill/teacher/pairs.py) against the tokenizer itself on every pair of
lengths past the limit, and documents whose ids the engine keeps ahead of time."""

from __future__ import annotations

import numpy as np
import pytest

from distill.teacher import pairs as pairs_mod
from distill.teacher.engine import ScoringEngine
from distill.teacher.model import load_teacher
from distill.teacher.pairs import BackendPairs
from tests.teacher import tiny_models


def tokenizer(post: str, side: str):
    """A tiny WordPiece tokenizer with one of the pair layouts encoder rerankers use, truncating on `side`."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = tiny_models._wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>"])
    cls_, sep = ("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))
    if post == "bert":  # [CLS] a [SEP] b [SEP], token types 0 and 1
        tok.post_processor = processors.BertProcessing(sep, cls_)
    elif post == "roberta":  # <s> a </s></s> b </s>, one token type
        tok.post_processor = processors.RobertaProcessing(
            ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>"))
        )
    else:  # a template with specials of its own between and after
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] [MASK] $A:0 [SEP] [MASK]:1 $B:1 [SEP]:1 [SEP]:0",
            special_tokens=[cls_, sep, ("[MASK]", tok.token_to_id("[MASK]"))],
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        truncation_side=side,
    )


def texts(word: str, n: int) -> str:
    return " ".join([word] * n)


@pytest.mark.parametrize("max_length", [11, 12])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("post", ["bert", "roberta", "template"])
def test_pairs_equal_the_tokenizers_on_every_pair_of_lengths(post, side, max_length):
    """For every query length and document length from 0 to past the limit, the assembled ids and token types
    are the tokenizer's own (what `CrossEncoder.preprocess` asks it for), with the documents encoded per call
    and kept ahead of time alike."""
    tok = tokenizer(post, side)
    lengths = range(max_length + 3)
    queries = [texts("cat", n) for n in lengths for _ in lengths]
    docs = [texts("mat", m) for _ in lengths for m in lengths]
    want = tok(queries, docs, truncation="longest_first", max_length=max_length, return_token_type_ids=True)
    fresh = BackendPairs(tok, max_length)
    kept = BackendPairs(tok, max_length)
    kept.keep(docs)
    for backend in (fresh, kept):
        ids, types = backend.encode(queries, docs)
        assert [i.tolist() for i in ids] == want["input_ids"]
        assert [t.tolist() for t in types] == want["token_type_ids"]
    assert len(kept.kept) == max_length + 3
    # each kept document holds no more tokens than a pair can (the target), 4 bytes a token
    assert kept.kept.flat.dtype == np.int32 and kept.kept.lengths.max() == max_length + 2
    assert np.diff(kept.kept.offsets).max() == kept.template.target


def test_a_truncation_the_template_gets_wrong_is_refused(monkeypatch):
    """`PairTemplate.agrees` compares the assembled pairs with the tokenizer's on lengths around the limit: a rule
    that cuts only the document (an easy slip) is caught, and the engine keeps preprocess."""

    def document_only(n1: int, n2: int, target: int) -> tuple[int, int]:
        return min(n1, target), max(0, min(n2, target - n1))

    monkeypatch.setattr(pairs_mod, "longest_first", document_only)
    with pytest.raises(ValueError, match="differ from what the pair template assembles"):
        BackendPairs(tokenizer("bert", "right"), 12)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return tiny_models.build("bert", tmp_path_factory.mktemp("bert"))


class Recorder:
    """The backend tokenizer, recording the texts it is asked to encode."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def encode_batch(self, texts, **kw):
        self.seen += list(texts)
        return self.inner.encode_batch(texts, **kw)

    def __getattr__(self, name):
        return getattr(self.inner, name)


Q = ["cat on a mat", "markets", "fox", "the cat sat " * 30]
D = ["the cat sat on the mat " * k for k in range(1, 7)] + ["stock markets fell sharply today", ""]


def test_kept_documents_score_as_before_and_are_not_tokenised_again(bert_dir):
    teacher = load_teacher(str(bert_dir), device="cpu")
    queries = [q for q in Q for _ in D]
    docs = D * len(Q)
    want = ScoringEngine(teacher).score(queries, docs)
    engine = ScoringEngine(teacher)
    assert engine.keep_documents(D, Q[:2]) == len(D)
    assert engine.tokenising == "backend"
    engine.backend.plain = recorder = Recorder(engine.backend.plain)
    got = engine.score(queries, docs)
    np.testing.assert_array_equal(got, want)
    assert set(recorder.seen) == set(Q)  # the queries only
    assert engine.keep_documents(D[:3], Q) == len(D)  # kept once


def test_through_preprocess_nothing_is_kept_and_scores_hold(bert_dir, monkeypatch):
    """A model whose preprocess changes the texts keeps preprocess: no document is kept, and the scores are those
    of its own preprocessing."""
    teacher = load_teacher(str(bert_dir), device="cpu")
    queries = [q for q in Q for _ in D]
    want = ScoringEngine(teacher).score(["fish " + q for q in queries], D * len(Q))
    plain = teacher.ce.preprocess
    monkeypatch.setattr(
        teacher.ce, "preprocess", lambda p, **kw: plain([("fish " + q, d) for q, d in p], **kw)
    )
    engine = ScoringEngine(teacher)
    assert engine.keep_documents(D, Q) == 0
    assert engine.tokenising == "preprocess"
    np.testing.assert_allclose(engine.score(queries, D * len(Q)), want, atol=1e-6, rtol=0)


def test_texts_kept_a_batch_at_a_time_equal_those_kept_at_once():
    """The corpus is encoded a batch at a time (only a batch's `Encoding` objects live at once): any batch size
    keeps the same ids, and texts added later extend what is kept."""
    from distill.teacher.pairs import KeptTexts

    backend = BackendPairs(tokenizer("bert", "right"), 12)

    def encode(batch):
        return backend.plain.encode_batch(batch, add_special_tokens=False)

    docs = [texts("mat", m) for m in range(16)]
    whole, batched = KeptTexts(), KeptTexts()
    whole.add(docs, encode, backend.template)
    batched.add(docs[:5], encode, backend.template, batch=2)
    batched.add(docs[5:], encode, backend.template, batch=3)
    for d in docs:
        (a, la), (b, lb) = whole.get(d), batched.get(d)
        assert a.tolist() == b.tolist() and la == lb == len(encode([d])[0].ids)
    assert whole.nbytes == batched.nbytes and whole.get("not kept") is None


def test_kept_texts_are_found_by_digest_even_when_half_of_it_collides(monkeypatch):
    """The store keeps a digest, not the text (20 bytes a text beside its ids); two texts whose digests share the
    first 64 bits are still told apart, and a text given twice is kept once."""
    from distill.teacher import pairs
    from distill.teacher.pairs import KeptTexts

    backend = BackendPairs(tokenizer("bert", "right"), 12)

    def encode(batch):
        return backend.plain.encode_batch(batch, add_special_tokens=False)

    docs = [texts("mat", m) for m in range(1, 9)]
    real = pairs.digests

    def colliding(ts):
        d = real(ts).copy()
        d[:, 0] = 7  # every text's first half the same
        return d

    monkeypatch.setattr(pairs, "digests", colliding)
    kept = KeptTexts()
    kept.add([*docs[:5], docs[0]], encode, backend.template)
    kept.add(docs[3:], encode, backend.template)
    assert len(kept) == len(docs)
    assert kept.find([*reversed(docs), "not kept"]).tolist() == [*reversed(range(len(docs))), -1]
    for d in docs:
        a, la = kept.get(d)
        assert a.tolist() == encode([d])[0].ids[: backend.template.target] and la == len(encode([d])[0].ids)
    ids_bytes = kept.flat.nbytes + kept.offsets.nbytes + kept.lengths.nbytes
    assert kept.nbytes - ids_bytes == 20 * len(docs)


def test_a_student_says_what_share_of_its_documents_max_length_cuts(caplog):
    from distill.students.neural import report_cut

    tok = tokenizer("bert", "right")
    docs = [texts("mat", 3), texts("mat", 10), texts("mat", 12)]  # 5, 12 and 14 tokens with [CLS] and [SEP]
    with caplog.at_level("INFO", logger="distill.students.neural"):
        assert report_cut(tok, docs, 8) == 2 / 3
        assert report_cut(tok, docs, 14) == 0.0
        assert report_cut(tok.backend_tokenizer, docs, 8) == 0.0  # not a transformers tokenizer: nothing said
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "student.max_length=8 cuts 67% of 3 training documents (raise it to keep more of each)",
        "student.max_length=14 cuts 0% of 3 training documents (raise it to keep more of each)",
    ]
