"""What the feature families share: the corpus's term sets."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from distill.data.beir import Dataset
from distill.features import family
from distill.features.family import FeatureContext
from distill.features.schema import FeatureOptions

RC = SimpleNamespace(fields=("title", "text"), stemmer=None, stopwords=None, lowercase=True)


@pytest.mark.parametrize("step", [1, 3, 1_000])
def test_the_term_sets_hold_each_documents_distinct_terms_over_its_fields_at_any_step(monkeypatch, step):
    monkeypatch.setattr(family, "TERM_STEP_DOCS", step)
    corpus = pd.DataFrame(
        {
            "title": ["apple", "", "pie pie", "cake", ""],
            "text": ["apple pie apple", "tart", "", "banana cake", ""],
        },
        index=pd.Index(["d1", "d2", "d3", "d4", "d5"]),
    )
    queries = pd.DataFrame({"text": ["apple"], "timestamp": pd.NaT}, index=pd.Index(["q1"]))
    ctx = FeatureContext(Dataset("terms", corpus, queries, {}, None), FeatureOptions(), RC, {}, chunk_rows=2)
    terms = ctx.doc_terms()
    # term ids: the titles' words in order of first occurrence, then the texts' new ones
    assert list(terms.vocab) == ["apple", "pie", "cake", "tart", "banana"]
    held = terms.held
    assert held.shape == (5, 5) and held.dtype == np.int8 and set(held.data.tolist()) == {1}
    assert held.has_sorted_indices
    names = list(terms.vocab)
    got = [[names[t] for t in held.indices[held.indptr[d] : held.indptr[d + 1]]] for d in range(5)]
    assert got == [["apple", "pie"], ["tart"], ["pie"], ["cake", "banana"], []]
    assert terms.doc_freq.tolist() == [1, 2, 1, 1, 1]
