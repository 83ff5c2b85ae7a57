"""`data.*`: which dataset, and each format's typed `data.options` (a `configs/data/<name>.yaml` starts with
`defaults: [<format>_data_schema]`, so a misspelt option fails when the config is composed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING

from distill.config import NAME_RULE, check, check_fraction, is_plain_name


@dataclass
class DataConfig:
    name: str = MISSING
    # beir | sample | trec | smart | flagembedding | msmarco | hf
    format: str = "beir"
    # The dataset folder (beir, sample) or the source files' folder (converted formats).
    path: str = MISSING
    # raise: the first bad row stops the run; drop: bad rows are dropped, counted and reported by reason.
    on_error: str = "raise"
    # Formats without splits, and datasets whose only split is test (most of BEIR): the fraction of judged queries
    # put in the test split (the rest is train), by a hash of the query id (distill/ir/split.py).
    test_fraction: float = 0.5
    split_seed: int = 0
    # Format-specific options: a `<format>_data_schema` types them (DATA_OPTIONS below).
    options: Any = field(default_factory=dict)

    def __post_init__(self) -> None:
        # data.name names a folder under paths.data_root and paths.workspace: it must not point elsewhere.
        check(self.name == MISSING or is_plain_name(self.name), "data.name", self.name, NAME_RULE)
        check(self.on_error in ("raise", "drop"), "data.on_error", self.on_error, "use raise or drop")
        check(0 <= self.test_fraction <= 1, "data.test_fraction", self.test_fraction, "must be in [0, 1]")


# ----------------------------------------------------------------------------------- data.options per format
# Each configs/data/<name>.yaml names the schema of its format (`defaults: [<format>_data_schema]`), so a
# misspelt option fails when the config is composed and the YAML holds only what differs from these defaults.


@dataclass
class SampleOptions:
    """The sample world's generator (distill/data/sample.py)."""

    VERSION: ClassVar[int] = 4  # bump when the generator's output changes (generated folders are re-made)
    seed: int = 13
    n_docs: int = 6000
    n_train: int = 600
    n_test: int = 250
    # version 4: 20 topics of 10 concepts (version 3: 120), so that a concept's alias recurs in the training
    # queries (about 4 each) and can be learned from them
    n_topics: int = 20
    concepts_per_topic: int = 10
    n_background: int = 800
    # Chance that a query writes a concept with a synonym instead of the documents' word.
    p_synonym: float = 0.7
    # Chance that a concept's synonym is a morphological variant of the document word (else an unrelated word, an
    # alias that no document holds); version 4: 0 (version 3: 0.7, variants that WordPiece splits back into the
    # document word, so that lexical matching over sub-words found most of them)
    p_morph: float = 0.0
    # Fraction of a topic's concepts whose document word also belongs to another topic.
    p_ambiguous: float = 0.25
    # Fraction of topics whose broad topic word is shared with another topic.
    p_ambiguous_topic: float = 0.5
    # Chance that a query names its broad topic word (which documents use).
    p_topic_word: float = 0.85
    p_fresh_query: float = 0.2
    fresh_days: int = 365
    # Intents (0: none): every document is of one intent, written with a few marker words of its own; a query
    # asks for one with chance `p_intent_query`, by a word documents never use, and documents of any other
    # intent are not relevant to it. Only the training queries tell which word means which markers.
    n_intents: int = 0
    p_intent_query: float = 0.6
    sessions_per_query: int = 20
    start: str = "2022-01-01"
    log_start: str = "2025-01-01"
    cutoff: str = "2026-01-01"

    def __post_init__(self) -> None:
        for key, low in (
            ("n_docs", 10),
            ("n_train", 1),
            ("n_test", 1),
            ("n_topics", 1),
            ("concepts_per_topic", 1),
        ):
            v = getattr(self, key)
            check(v >= low, f"data.options.{key}", v, f"must be at least {low}")
        check_fraction(
            self,
            "data.options",
            "p_synonym",
            "p_morph",
            "p_ambiguous",
            "p_ambiguous_topic",
            "p_topic_word",
            "p_fresh_query",
            "p_intent_query",
        )
        for key in ("n_background", "fresh_days", "sessions_per_query", "n_intents"):
            v = getattr(self, key)
            check(v >= 0, f"data.options.{key}", v, "must be >= 0")


@dataclass
class TrecOptions:
    docs: str = "docs.trec"
    topics: str = "topics.trec"
    qrels: str = "qrels"
    # Which topic field is the query text: title | desc | title+desc
    query_field: str = "title"

    def __post_init__(self) -> None:
        check(
            self.query_field in ("title", "desc", "title+desc"),
            "data.options.query_field",
            self.query_field,
            "use title, desc or title+desc",
        )


@dataclass
class SmartOptions:
    docs: str = "docs.all"
    queries: str = "query.text"
    qrels: str = "qrels.text"
    # trec: "qid 0 docid rel"; cranfield: "qid docid code" with codes 1..4 -> gains 4..1, -1 -> 0;
    # cacm: "qid docid 0 0", every listed pair relevant (1).
    qrels_format: str = "trec"
    # Number queries 1..N in file order instead of using their .I ids (Cranfield's qrels do this).
    sequential_query_ids: bool = False

    def __post_init__(self) -> None:
        check(
            self.qrels_format in ("trec", "cranfield", "cacm"),
            "data.options.qrels_format",
            self.qrels_format,
            "use trec, cranfield or cacm",
        )


@dataclass
class FlagEmbeddingOptions:
    file: str = "train.jsonl"


@dataclass
class MsMarcoOptions:
    collection: str = "collection.tsv"
    queries: dict[str, str] = field(default_factory=lambda: {"test": "queries.dev.tsv"})
    qrels: dict[str, str] = field(default_factory=lambda: {"test": "qrels.dev.tsv"})


@dataclass
class HFOptions:
    """`datasets.load_dataset` arguments ({path: ..., name: ..., split: ...}) for each part."""

    corpus: dict[str, Any] = field(default_factory=dict)
    queries: dict[str, Any] = field(default_factory=dict)
    qrels: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class NoOptions:
    """A BEIR folder is read as it is: it has no options."""


DATA_OPTIONS: dict[str, type] = {
    "beir": NoOptions,
    "sample": SampleOptions,
    "trec": TrecOptions,
    "smart": SmartOptions,
    "flagembedding": FlagEmbeddingOptions,
    "msmarco": MsMarcoOptions,
    "hf": HFOptions,
}


def data_schema(fmt: str) -> type:
    """DataConfig with `options` typed as format `fmt`'s options (registered as `<fmt>_data_schema`)."""
    from dataclasses import make_dataclass

    opts = DATA_OPTIONS[fmt]
    return make_dataclass(
        f"{fmt.capitalize()}DataConfig",
        [("format", str, field(default=fmt)), ("options", opts, field(default_factory=opts))],
        bases=(DataConfig,),
    )
