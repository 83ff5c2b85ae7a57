import numpy as np
import pandas as pd
import pytest

from distill.data.prepare import load_dataset
from distill.errors import ConfigError, DataError
from distill.features.build import build_features, default_families
from distill.features.build import run as run_features
from distill.features.family import FeatureFamily
from distill.retrieval.candidates import run as run_candidates
from distill.students.base import Context, load_scorers
from distill.students.gbdt import train_gbdt
from distill.workspace import Workspace
from tests.conftest import spy_loaded_corpus_columns


def test_features_are_complete_and_sensible(tiny_sample_cfg):
    cfg = tiny_sample_cfg("retrieval.k=15")
    run_candidates(cfg)
    run_features(cfg)
    df = pd.read_parquet(f"{cfg.paths.workspace}/features.parquet")
    cands = pd.read_parquet(f"{cfg.paths.workspace}/candidates.parquet")
    assert len(df) == len(cands) and (df.qid.to_numpy() == cands.qid.to_numpy()).all()
    every = [n for fam in default_families() for n in fam.names]
    expected = [f for f in every if f != "popularity"]  # the sample world has no popularity field
    assert [c for c in df.columns if c not in ("qid", "docid", "split")] == expected
    assert df.coverage.between(0, 1).all() and (df.query_len >= 0).all()
    assert (df.impressions >= df.clicks).all() and df.ctr.between(0, 1).all()
    # per-field BM25 of the body agrees closely with the candidates' BM25 over title + body
    assert df[["bm25_text", "bm25"]].corr(method="spearman").iloc[0, 1] > 0.8
    assert (df.bm25_title >= 0).all()


def test_coverage_and_age_hand_example(tiny_beir, make_cfg):
    root = tiny_beir(queries=[{"_id": "q1", "text": "cat on a mat zebra"}, {"_id": "q2", "text": "markets"}])
    cfg = make_cfg("data=beir", f"data.path={root}", "retrieval.stemmer=null", "retrieval.stopwords=null")
    ds = load_dataset(cfg)
    cands = pd.DataFrame(
        {
            "qid": ["q1", "q1"],
            "docid": ["d1", "d3"],
            "rank": [1, 2],
            "bm25": [2.0, 0.5],
            "split": ["test", "test"],
        }
    )
    df = build_features(ds, cands, ["coverage", "query_len", "age_days", "popularity"], {}, cfg.retrieval)
    # q1 = "cat on a mat zebra" -> terms cat, on, mat, zebra ("a" is too short): d1 has 3 of 4; d3 none
    np.testing.assert_allclose(df.coverage, [0.75, 0.0])
    assert df.query_len.tolist() == [4, 4]
    assert df.age_days.iloc[0] == 0.0 and np.isnan(df.age_days.iloc[1])  # reference = newest doc; d3 undated
    assert "popularity" not in df  # no such field: dropped, logged


def test_unknown_feature_is_an_error(tiny_beir, make_cfg):
    cfg = make_cfg("data=beir", f"data.path={tiny_beir()}")
    with pytest.raises(ConfigError, match=r"unknown feature\(s\) \['pagerank'\]"):
        build_features(
            load_dataset(cfg),
            pd.DataFrame(columns=["qid", "docid", "rank", "bm25", "split"]),
            ["pagerank"],
            {},
            cfg.retrieval,
        )


def test_unknown_feature_names_are_refused_before_any_work(tiny_sample_cfg):
    cfg = tiny_sample_cfg("retrieval.k=5", "features.names=[bm25,pagerank]")
    run_candidates(cfg)
    with pytest.raises(
        ConfigError, match=r"features.names: unknown feature\(s\) \['pagerank'\]; the families compute"
    ):
        run_features(cfg)


class DoubledBM25(FeatureFamily):
    """A family of one feature, as a user would add one: a module with this class, and a YAML naming it."""

    names = ("bm25_doubled",)

    def compute(self, ctx, rows, wanted):
        return {"bm25_doubled": 2 * rows.bm25.to_numpy("float32")}


def test_a_new_family_is_a_class_and_a_config_entry(tiny_sample_cfg):
    cfg = tiny_sample_cfg(
        "retrieval.k=5",
        "feature@features.families=[bm25]",
        f"+features.families.doubled._target_={__name__}.DoubledBM25",
    )
    run_candidates(cfg)
    run_features(cfg)
    df = pd.read_parquet(f"{cfg.paths.workspace}/features.parquet")
    assert list(df.columns[3:]) == ["bm25", "bm25_rank", "bm25_title", "bm25_text", "bm25_doubled"]
    np.testing.assert_allclose(df.bm25_doubled, 2 * df.bm25)


def test_a_gbdt_never_scores_features_other_than_its_own(gbdt_ws):
    """After `make features` with other options, a trained GBDT once scored the new values silently (and with
    fewer names crashed with KeyError): its folder records the features' fingerprint, and loading refuses."""
    from distill.errors import StageNotReadyError

    cfg = gbdt_ws("student=lightgbm")
    train_gbdt(cfg)
    ws = Workspace.from_cfg(cfg)
    cands = pd.read_parquet(ws.candidates)
    (scorer,) = load_scorers(ws.model("lightgbm"), Context(None, ws, cands))  # type: ignore[arg-type]
    assert len(scorer.score(cands.head(5))) == 5
    for other in ("features.options.ctr_prior_weight=50", "features.names=[bm25,coverage]"):
        run_features(gbdt_ws("student=lightgbm", other))
        with pytest.raises(
            StageNotReadyError, match=r"models/lightgbm is stale: it was trained on other features"
        ):
            load_scorers(ws.model("lightgbm"), Context(None, ws, cands))  # type: ignore[arg-type]


def test_a_row_without_features_is_refused_not_scored_on_missing_values(gbdt_ws):
    cfg = gbdt_ws("student=lightgbm")
    train_gbdt(cfg)
    ws = Workspace.from_cfg(cfg)
    cands = pd.read_parquet(ws.candidates)
    (scorer,) = load_scorers(ws.model("lightgbm"), Context(None, ws, cands))  # type: ignore[arg-type]
    outside = cands.head(2).assign(docid=["not-a-candidate", "nor-this"])
    with pytest.raises(
        DataError,
        match=r"2 row\(s\) have no features .*first: qid .*'not-a-candidate'.*serve.n must not exceed",
    ):
        scorer.score(outside)


def test_chunks_smaller_than_the_data_give_identical_features(tiny_sample_cfg, caplog):
    """features.parquet is built a chunk of queries at a time (one row group each): its content does not depend
    on the chunk size, and no query is split between chunks. A feature without a source is said to be dropped
    once, not once per chunk."""
    import logging

    import pyarrow.parquet as pq

    whole = tiny_sample_cfg("retrieval.k=15", "paths.workspace=${paths.output_root}/w")
    run_candidates(whole)
    run_features(whole)
    a = pd.read_parquet(f"{whole.paths.workspace}/features.parquet")
    small = tiny_sample_cfg(
        "retrieval.k=15", "features.chunk_rows=40", "paths.workspace=${paths.output_root}/w"
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="distill.features"):
        run_features(small)
    said = [r for r in caplog.records if "popularity dropped" in r.getMessage()]
    assert len(said) == 1  # the sample world has no popularity field
    path = f"{small.paths.workspace}/features.parquet"
    assert pq.ParquetFile(path).num_row_groups > 10
    b = pd.read_parquet(path)
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def test_the_stage_reads_the_corpus_texts_from_its_file_and_never_holds_them(tiny_sample_cfg, monkeypatch):
    """No default family reads the corpus's texts other than tokenised, so the stage loads the dataset without
    them (`stage_dataset`): the tokens come from corpus.jsonl. Its features are those of a dataset that holds
    them; with a family that reads texts, the stage loads them."""
    from distill.features import build

    cfg = tiny_sample_cfg("retrieval.k=15")
    run_candidates(cfg)
    loaded = spy_loaded_corpus_columns(monkeypatch, build)
    run_features(cfg)
    assert len(loaded) == 1 and not {"title", "text"} & loaded[0]
    got = pd.read_parquet(f"{cfg.paths.workspace}/features.parquet")
    cands = pd.read_parquet(f"{cfg.paths.workspace}/candidates.parquet")
    want = build_features(load_dataset(cfg), cands, [], None, cfg.retrieval)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    from distill.features.bm25 import BM25Features

    monkeypatch.setattr(BM25Features, "reads_texts", True)
    build.stage_dataset(cfg)
    assert {"title", "text"} <= loaded[-1]


def test_bm25_of_a_field_no_document_fills_is_dropped(tiny_beir, make_cfg, caplog):
    import logging

    docs = [{"_id": f"d{i}", "title": " " if i % 2 else "", "text": f"cats and dogs {i}"} for i in range(4)]
    cfg = make_cfg("data=beir", f"data.path={tiny_beir(corpus=docs)}")
    cands = pd.DataFrame(
        {"qid": ["q1", "q1"], "docid": ["d1", "d2"], "rank": [1, 2], "bm25": [2.0, 0.5], "split": "test"}
    )
    with caplog.at_level(logging.INFO, logger="distill.features"):
        df = build_features(load_dataset(cfg), cands, ["bm25_title", "bm25_text"], {}, cfg.retrieval)
    assert "bm25_title" not in df and (df.bm25_text > 0).all()
    assert any(
        "bm25_title dropped: no document's 'title' field holds a term" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize("column,value,held", [("docid", "d404", "corpus"), ("qid", "q404", "queries")])
def test_candidates_naming_what_the_dataset_lacks_are_refused(tiny_beir, make_cfg, column, value, held):
    """Every family reads the positions found once per chunk; an id the dataset lacks is refused with its name
    (it used to index the corpus's last document for the BM25 features and give NaN ages)."""
    root = tiny_beir(queries=[{"_id": "q1", "text": "cat on a mat"}, {"_id": "q2", "text": "markets"}])
    cfg = make_cfg("data=beir", f"data.path={root}")
    cands = pd.DataFrame({"qid": ["q1", "q1"], "docid": ["d1", "d3"], "rank": [1, 2], "bm25": [2.0, 0.5]})
    cands["split"] = "test"
    cands.loc[1, column] = value
    with pytest.raises(
        DataError, match=rf"{column} '{value}' is not in dataset .*'s {held}: .*re-run `make candidates`"
    ):
        build_features(load_dataset(cfg), cands, [], {}, cfg.retrieval)


def test_lexical_features_from_each_fields_tokens_equal_those_of_the_joined_text(tiny_beir, make_cfg):
    """The lexical family reads the tokens of each field that the BM25 family tokenised (not the corpus a
    third time): a document's terms and length equal those of its fields joined, as retrieval indexes them."""
    from distill.ir.bm25 import Tokenizer

    root = tiny_beir(
        corpus=[
            {"_id": "d1", "title": "Cats, running", "text": "cats ran on the mats; mat-cats"},
            {"_id": "d2", "title": "", "text": "dogs chase cats in the park"},
            {"_id": "d3", "title": "Markets.", "text": ""},
            {"_id": "d4", "title": "the a an", "text": "salmon-run: salmon swim"},
        ],
        queries=[{"_id": "q1", "text": "running cats mat"}, {"_id": "q2", "text": "market salmon runs"}],
        qrels="query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td3\t1\n",
    )
    cfg = make_cfg("data=beir", f"data.path={root}")
    ds = load_dataset(cfg)
    docs = ["d1", "d2", "d3", "d4"]
    cands = pd.DataFrame({"qid": ["q1"] * 4 + ["q2"] * 4, "docid": docs * 2, "rank": [1, 2, 3, 4] * 2})
    cands["bm25"], cands["split"] = 1.0, "test"
    df = build_features(ds, cands, ["doc_len", "coverage", "query_len", "bm25_title"], {}, cfg.retrieval)
    rc = cfg.retrieval
    tok = Tokenizer(rc.stemmer, rc.stopwords, rc.lowercase)
    doc_terms = dict(zip(docs, tok(ds.doc_texts(docs, rc.fields)), strict=True))
    query_terms = dict(zip(["q1", "q2"], tok(ds.queries.loc[["q1", "q2"], "text"].tolist()), strict=True))
    assert df.doc_len.tolist() == [len(doc_terms[d]) for d in cands.docid]
    want = [
        len(set(query_terms[q]) & set(doc_terms[d])) / len(set(query_terms[q]))
        for q, d in zip(cands.qid, cands.docid, strict=True)
    ]
    np.testing.assert_allclose(df.coverage, want, rtol=1e-6)
    assert (
        df.coverage.iloc[0] == 1.0 and df.coverage.iloc[5] == 0.0
    )  # d1 holds run, cat, mat; d2 none of q2's


class TextLength(FeatureFamily):
    """A family that reads the documents' texts per chunk (`reads_texts` left at its default)."""

    names = ("text_chars",)

    def compute(self, ctx, rows, wanted):
        chars = ctx.ds.corpus["text"].str.len().to_numpy("float32")
        return {"text_chars": chars[rows.dpos.to_numpy()]}


def test_the_stage_lets_the_texts_go_only_when_no_family_reads_them(tiny_sample_cfg):
    """The stage owns its dataset: once the families are prepared it drops the corpus's texts, unless a family
    reads them per chunk. The features are those computed with the texts held."""
    from distill.features.build import feature_chunks
    from distill.retrieval.candidates import checked_candidates

    for extra, kept in (([], False), ([f"+features.families.chars._target_={__name__}.TextLength"], True)):
        cfg = tiny_sample_cfg("retrieval.k=5", "feature@features.families=[bm25,lexical]", *extra)
        run_candidates(cfg)
        ds = load_dataset(cfg)
        cands = pd.read_parquet(Workspace.from_cfg(cfg).candidates)
        held = build_features(load_dataset(cfg), cands, [], {}, cfg.retrieval, load_families_of(cfg))
        ws = Workspace.from_cfg(cfg)
        names, chunks, _ = feature_chunks(cfg, ws, ds, checked_candidates(cfg, ws, ds))
        got = pd.concat(list(chunks), ignore_index=True)
        assert ("text" in ds.corpus) == kept and "timestamp" in ds.corpus
        pd.testing.assert_frame_equal(got, held.reset_index(drop=True), check_dtype=False)
        if kept:
            assert (got.text_chars > 0).all()


def load_families_of(cfg):
    from distill.features.family import load_families

    return load_families(cfg.features.families)


def test_the_corpus_tokens_go_once_the_term_sets_are_made(tiny_sample_cfg, monkeypatch):
    """The translation family reads the corpus's tokens only through the term sets, which the lexical family
    makes first: the tokens are let go before the behaviour family between them prepares (at 100x the sample
    world, while the click log is aggregated), the corpus is tokenised once per field, and the features equal
    those made with the tokens held until the translation family is prepared."""
    from distill.features import family
    from distill.features.behaviour import BehaviourFeatures
    from distill.features.family import FeatureContext

    cfg = tiny_sample_cfg("retrieval.k=5", "feature@features.families=[lexical,behaviour,translation]")
    run_candidates(cfg)
    cands = pd.read_parquet(Workspace.from_cfg(cfg).candidates)
    events: list[str] = []
    tokens, release, behaviour = (
        family.CompactTokens,
        FeatureContext.release_tokens,
        BehaviourFeatures.prepare,
    )
    monkeypatch.setattr(family, "CompactTokens", lambda *a: events.append("tokenise") or tokens(*a))
    monkeypatch.setattr(
        FeatureContext, "release_tokens", lambda self: events.append("release") or release(self)
    )
    monkeypatch.setattr(
        BehaviourFeatures, "prepare", lambda self, *a: events.append("behaviour") or behaviour(self, *a)
    )
    got = build_features(load_dataset(cfg), cands, [], None, cfg.retrieval, load_families_of(cfg))
    assert events[:4] == ["tokenise", "tokenise", "release", "behaviour"]
    assert events.count("tokenise") == 2  # title and text, never again for the term sets
    monkeypatch.setattr(
        FeatureContext, "needs_tokens", lambda self, f: f.reads_corpus_tokens or f.reads_doc_terms
    )
    held = build_features(load_dataset(cfg), cands, [], None, cfg.retrieval, load_families_of(cfg))
    assert {"coverage", "click_translation", "judged_translation"} <= set(got.columns)
    pd.testing.assert_frame_equal(got, held)
