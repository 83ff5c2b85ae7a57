"""The tantivy index: its Rust analyzer gives bm25s's terms, and its top k does not depend on the index's segments."""

import logging

import pytest

from distill.data.prepare import load_dataset
from distill.ir import tantivy_index
from distill.ir.bm25 import Tokenizer
from distill.ir.tantivy_index import TantivyIndex

ASCII = [
    "The Cats were RUNNING quickly, aren't they? a_b_c x 42 7z __init__ e-mail",
    "running runners run; the dog's bark barked at 3am (and 1990s music)",
    "",
    "a I x",  # only one-letter words: no token
    "Caterpillars and cats: concatenation of CAT-like catalogues",
]
NON_ASCII = ["École naïve résumé café", "İstanbul straße ﬁle ½ ² co\u0301operate"]


def search_all(index: TantivyIndex, queries: list[str], k: int) -> list[tuple[list[int], list[float]]]:
    pos, scores = index.search(queries, k)
    return [(p.tolist(), s.tolist()) for p, s in zip(pos, scores, strict=True)]


def test_the_rust_analyzer_gives_bm25s_tokens_on_ascii_text():
    tok = Tokenizer()
    analyzer = tok.tantivy_analyzer()
    for text, tokens in zip(ASCII, tok(ASCII), strict=True):
        assert analyzer.analyze(text) == [t for t in tokens if t], text


def test_an_index_analysed_in_rust_equals_one_from_python_tokens(tmp_path, monkeypatch):
    """ASCII documents analysed by tantivy and the others tokenised in Python give the very index (the same
    candidates and scores) that tokens made in Python for every document give."""
    texts = (ASCII + NON_ASCII) * 3 + [f"cat {w} run" for w in ("ecole", "naive", "istanbul", "file")]
    queries = ["cats running", "école café", "İstanbul", "the dog", "catalogue concatenation", "file"]
    tok = Tokenizer()
    rust = TantivyIndex.open(tmp_path / "rust", texts, tok, {"v": 1})
    assert tantivy_index.rust_analyzer(tok, texts) is not None
    monkeypatch.setattr(tantivy_index, "rust_analyzer", lambda tokenizer, texts: None)
    python = TantivyIndex.open(tmp_path / "python", texts, tok, {"v": 1})
    assert search_all(rust, queries, 5) == search_all(python, queries, 5)
    assert any(len(p) for p, _ in search_all(rust, ["école"], 5))


class UnstemmedAnalyzer(Tokenizer):
    """A tokenizer whose Rust analyzer forgets to stem: it disagrees with bm25s."""

    def tantivy_analyzer(self):
        import tantivy

        return tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(r"[0-9A-Za-z_]{2,}")).build()


def test_an_analyzer_that_disagrees_with_bm25s_is_not_used(tmp_path, caplog):
    tok = UnstemmedAnalyzer()
    with caplog.at_level(logging.WARNING, logger="distill.ir.tantivy_index"):
        assert tantivy_index.rust_analyzer(tok, ASCII) is None
    assert "the corpus is tokenised in Python" in caplog.text
    index = TantivyIndex.open(tmp_path / "ix", ASCII, tok, {"v": 1})
    assert search_all(index, ["runner"], 5)[0][0] == [1]  # "runners" stemmed as bm25s stems it


def test_ties_at_the_kth_score_go_to_the_first_positions_whatever_the_segments(tmp_path):
    """Documents that score alike are ranked by position, also where the index holds them in another order (as
    several indexing threads leave them): tantivy alone would keep the first it holds."""
    import tantivy

    n = 40
    sb = tantivy.SchemaBuilder()
    sb.add_text_field("body", tokenizer_name="whitespace", index_option="freq")
    sb.add_integer_field("pos", fast=True)
    index = tantivy.Index(sb.build(), path=str(tmp_path))
    writer = index.writer(heap_size=50_000_000, num_threads=1)
    for pos in reversed(range(n)):  # held last position first
        writer.add_document(tantivy.Document(body="cat" if pos % 2 else "cat dog", pos=pos))
    writer.commit()
    writer.wait_merging_threads()
    ix = TantivyIndex(tmp_path, Tokenizer(), n)
    (got, scores), (all_pos, _) = search_all(ix, ["cat"], 3)[0], search_all(ix, ["cat"], n)[0]
    assert got == [1, 3, 5]  # the shorter documents score higher; ties by position
    assert all_pos[:3] == got and len(set(scores)) == 1
    pos, _ = ix.search(["dog"], 25)
    assert pos[0].tolist() == list(range(0, n, 2))[:25]


def test_the_rust_analyzer_gives_bm25s_tokens_on_every_ascii_text_of_real_corpora(shared_data, make_cfg):
    """The Snowball stemmers of PyStemmer and of tantivy agree on real English words (and the index checks the
    first texts of each corpus it builds)."""
    tok = Tokenizer()
    analyzer = tok.tantivy_analyzer()
    for name in ("vaswani", "cranfield", "cacm"):
        ds = load_dataset(make_cfg(f"data={name}"))
        texts = [t for t in ds.doc_texts(ds.corpus.index) + ds.queries.text.tolist() if t.isascii()]
        assert len(texts) > 1000
        bad = [
            (t, tokens)
            for t, tokens in zip(texts, tok(texts), strict=True)
            if analyzer.analyze(t) != [x for x in tokens if x]
        ]
        assert not bad, (name, bad[:1])


def test_a_stemmer_tantivy_lacks_keeps_the_python_tokens():
    assert Tokenizer(stemmer="porter").tantivy_analyzer() is None
    assert Tokenizer(stemmer=None, stopwords=None).tantivy_analyzer() is not None


@pytest.mark.parametrize("stemmer", ["french", "german"])
def test_other_languages_analyse_like_bm25s(stemmer):
    tok = Tokenizer(stemmer=stemmer, stopwords=stemmer)
    texts = [
        "Les chats mangeaient des pommes dans les jardins",
        "Die Katzen liefen schnell durch die Gaerten",
    ]
    analyzer = tok.tantivy_analyzer()
    for text, tokens in zip(texts, tok(texts), strict=True):
        assert analyzer.analyze(text) == [t for t in tokens if t]
