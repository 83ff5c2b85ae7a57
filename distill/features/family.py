"""The feature-family seam: a family is one class (`FeatureFamily`: the names it can compute and `compute`) in a
module of its own, plus one `configs/feature/<name>.yaml` holding `<name>: {_target_: module.Class}`; the
families a run uses are the YAMLs selected as `feature@features.families: [...]` (configs/config.yaml), built
with `hydra.utils.instantiate`, as the trackers are."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from distill.data.beir import Dataset
from distill.errors import ConfigError, DataError
from distill.features.schema import FeatureOptions
from distill.ir.bm25 import CompactTokens, Tokenizer

# Documents per step of the corpus's term sets (`FeatureContext.doc_terms`): bounds one step's (document, term) keys.
TERM_STEP_DOCS = 20_000


@dataclass
class DocTerms:
    """The corpus as term sets: `vocab` (term -> column), `held` (documents x terms, 1 where the document
    holds the term, int8) and `doc_freq` (per term, the documents holding it)."""

    vocab: dict[str, int]
    held: sp.csr_matrix
    doc_freq: np.ndarray


@dataclass
class FeatureContext:
    """What a family may read: the dataset, the feature and retrieval options, the queries of each split of
    the candidates (the rows themselves come a chunk at a time) and `features.chunk_rows`."""

    ds: Dataset
    opts: FeatureOptions
    rc: Any  # retrieval options (tokenisation, BM25 parameters)
    splits: dict[str, list[str]]
    chunk_rows: int = 200_000  # rows a family reads at a time from what it streams (the click log)
    source: str = "the candidates"  # where the rows come from, for messages
    _tokens: dict[str, CompactTokens] = field(default_factory=dict, repr=False)
    _shared: dict[str, Any] = field(default_factory=dict, repr=False)

    def corpus_tokens(self, name: str) -> CompactTokens:
        """Every document's field `name` in the retrieval's tokenisation, tokenised once for every family that
        reads it while the families prepare (tokenising the corpus is most of their cost)."""
        if name not in self._tokens:
            rc = self.rc
            self._tokens[name] = CompactTokens(
                self.ds.lazy_doc_texts([name]), Tokenizer(rc.stemmer, rc.stopwords, rc.lowercase)
            )
        return self._tokens[name]

    def release_tokens(self) -> None:
        """Forget the corpus's tokens (once no family left to prepare reads them)."""
        self._tokens.clear()

    def needs_tokens(self, family: FeatureFamily) -> bool:
        """Whether `family`'s `prepare` would read the corpus's tokens: itself, or through term sets not yet made
        (at 100x the sample world the tokens are 155 MiB, held otherwise while the click log is aggregated)."""
        return family.reads_corpus_tokens or (family.reads_doc_terms and "doc_terms" not in self._shared)

    def token_fields(self) -> list[str]:
        """The `retrieval.fields` the corpus has, whose tokens make a document's terms (none of them: all, and
        tokenising names the missing fields in a DataError)."""
        return [f for f in self.rc.fields if self.ds.has_field(f)] or list(self.rc.fields)

    def shared(self, name: str, build: Callable[[], Any]) -> Any:
        """What several families prepare from (the corpus's term sets, the aggregated click log): built by the
        first that asks, handed to the rest, and forgotten here once every family is prepared (`release_shared`;
        the families keep what they hold)."""
        if name not in self._shared:
            self._shared[name] = build()
        return self._shared[name]

    def release_shared(self) -> None:
        self._shared.clear()

    def doc_terms(self) -> DocTerms:
        """Every document's set of terms, in the retrieval's tokenisation, from each of `retrieval.fields`'
        tokens (`corpus_tokens`): a document's text is its fields joined by a space, and a space splits words, so
        its terms are its fields' terms together. Memory holds the term sets, not every document's tokens."""
        return self.shared("doc_terms", self._doc_terms)

    def _doc_terms(self) -> DocTerms:
        vocab: dict[str, int] = {}
        fields = []
        for name in self.token_fields():
            part = self.corpus_tokens(name)
            # the field's term ids in the vocabulary of every field
            remap = np.fromiter(
                (vocab.setdefault(t, len(vocab)) for t in part.vocab), np.int32, len(part.vocab)
            )
            fields.append((part, remap))
        assert fields  # rc.fields is never empty (RetrievalConfig)
        n_docs, n_terms = len(self.ds.corpus), len(vocab)
        # each document's distinct terms over its fields, sorted, a step of documents at a time: memory holds one
        # step's tokens as (document, term) keys, never the corpus's
        indices, per_doc = [np.zeros(0, np.int32)], [np.zeros(0, np.int64)]
        doc_freq = np.zeros(n_terms, np.int64)
        for a in range(0, n_docs, TERM_STEP_DOCS):
            b = min(a + TERM_STEP_DOCS, n_docs)
            keys = np.unique(
                np.concatenate(
                    [
                        np.repeat(
                            np.arange(b - a, dtype=np.int64) * n_terms, np.diff(part.offsets[a : b + 1])
                        )
                        + remap[part.flat[part.offsets[a] : part.offsets[b]]]
                        for part, remap in fields
                    ]
                )
            )
            indices.append((keys % max(n_terms, 1)).astype(np.int32))
            doc_freq += np.bincount(indices[-1], minlength=n_terms)
            per_doc.append(np.bincount(keys // max(n_terms, 1), minlength=b - a))
        indptr = np.concatenate([[0], np.cumsum(np.concatenate(per_doc))])
        terms = np.concatenate(indices)
        # whether the document holds the term, one byte per entry: the matrix is held for the whole corpus, and
        # float32 counts would take four
        held = sp.csr_matrix((np.ones(len(terms), dtype=np.int8), terms, indptr), shape=(n_docs, n_terms))
        return DocTerms(vocab, held, doc_freq)

    def release_texts(self) -> None:
        """Drop the corpus's text columns (title, text, `retrieval.fields`) from the dataset itself, once the
        families that tokenise the corpus are prepared and no family reads the texts otherwise
        (`FeatureFamily.reads_texts`): the texts are the dataset's largest part, and the stage that owns the dataset
        needs them only to tokenise. Once they are gone, this does nothing."""
        self.ds.drop_texts(self.rc.fields if self.rc is not None else ())


def with_positions(ctx: FeatureContext, rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` with `qpos` and `dpos`: each row's query's position in `ctx.ds.queries` and document's in
    `ctx.ds.corpus`, found once per chunk for every family (the string ids' lookup is most of a chunk's cost
    when each family does it). A query or document the dataset lacks is a `DataError` naming it: the rows
    come from another dataset, and no feature is computed from a wrong row."""
    qpos, dpos = ctx.ds.query_positions(rows.qid), ctx.ds.doc_positions(rows.docid)
    for kind, pos, ids, held in (("qid", qpos, rows.qid, "queries"), ("docid", dpos, rows.docid, "corpus")):
        if (pos < 0).any():
            at = int(np.flatnonzero(pos < 0)[0])
            raise DataError(
                f"{ctx.source}: {kind} {ids.iloc[at]!r} is not in dataset {ctx.ds.name!r}'s {held}: the "
                f"candidates were made from another dataset; re-run `make candidates` for this one"
            )
    return rows.assign(qpos=qpos.astype(np.int64), dpos=dpos.astype(np.int64))


def query_positions(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(the chunk's distinct query positions, each row's index into them)."""
    distinct, local = np.unique(rows.qpos.to_numpy(), return_inverse=True)
    return distinct, local.reshape(-1)


class FeatureFamily:
    """A family of features. `names`: what it can compute. `prepare(ctx, wanted)` runs once, for what grows with
    the corpus or the click log (indexes, aggregates); `compute(ctx, rows, wanted)` then gives, for a chunk of
    candidate rows (qid, docid, rank, bm25, split; whole queries; and `qpos`, `dpos`, the query's and the
    document's positions in the dataset, `with_positions`), one float32 array per feature of `wanted` it
    can compute from the data at hand: a feature whose source is missing is left out (the same for every chunk)
    with a logged reason, never filled in. Memory: the prepared state plus one chunk."""

    names: ClassVar[tuple[str, ...]] = ()
    # whether `prepare` reads `ctx.corpus_tokens` (they are kept until the last such family is prepared)
    reads_corpus_tokens: ClassVar[bool] = False
    # whether `prepare` reads `ctx.doc_terms` (made from the corpus's tokens: they are kept for such a family only
    # while the term sets are not yet made, `FeatureContext.needs_tokens`)
    reads_doc_terms: ClassVar[bool] = False
    # whether the family reads the corpus's texts (title, text, `retrieval.fields`) itself, in `compute` or in
    # `prepare`, other than while a family that `reads_corpus_tokens` prepares; when no family used does, the
    # stage drops them with the tokens (`FeatureContext.release_texts`)
    reads_texts: ClassVar[bool] = True
    # how each of `names` is computed, one line each (an export's features.json states it beside the feature)
    about: ClassVar[dict[str, str]] = {}

    def prepare(self, ctx: FeatureContext, wanted: set[str]) -> None:
        """Build what every chunk needs (nothing by default)."""

    def compute(self, ctx: FeatureContext, rows: pd.DataFrame, wanted: set[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def index_bytes(self) -> int:
        """The bytes of the BM25 index the prepared family holds (none by default): the one structure allowed to
        grow with the corpus, which the stage reports per document (`index_bytes_per_doc`)."""
        return 0


def load_families(node: Any) -> list[FeatureFamily]:
    """The configured families (`features.families`: {name: {_target_: ...}}), in order."""
    from hydra.utils import instantiate

    from distill.config import to_container

    out = []
    for key, spec in (to_container(node) or {}).items():
        if not isinstance(spec, dict) or not spec.get("_target_"):
            raise ConfigError(f"features.families.{key} has no _target_ (configs/feature/{key}.yaml)")
        try:
            fam = instantiate(spec)
        except Exception as e:  # Hydra's InstantiationException
            if isinstance(e.__cause__, ConfigError):  # the family's own one line on its options
                raise e.__cause__ from None
            raise ConfigError(f"features.families.{key}: cannot build {spec['_target_']!r}") from e
        if not isinstance(fam, FeatureFamily):
            raise ConfigError(f"features.families.{key}: {spec['_target_']!r} is not a FeatureFamily")
        out.append(fam)
    return out


__all__ = [
    "DocTerms",
    "FeatureContext",
    "FeatureFamily",
    "load_families",
    "query_positions",
    "with_positions",
]
