"""Typed config schemas, registered in Hydra's ConfigStore.

Every group option under `configs/` is merged into one of these dataclasses, so a misspelt key or a value of
the wrong type fails when the config is composed, naming the key. Import this module before composing a
config (the entry points in `scripts/` and `tests/conftest.py` do).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"

if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
if not OmegaConf.has_resolver("basename"):  # a folder's name: data.name of data=beir is its folder's name
    OmegaConf.register_new_resolver("basename", lambda path: Path(str(path).rstrip("/")).name)


def check(ok: bool, key: str, value: Any, rule: str) -> None:
    """Raise a `ConfigError` naming `key` and its allowed range unless `ok`."""
    if not ok:
        from distill.errors import ConfigError

        raise ConfigError(f"{key}={value!r}: {rule}")


def check_positive(node: Any, prefix: str, *keys: str) -> None:
    for k in keys:
        v = getattr(node, k)
        check(v is None or v > 0, f"{prefix}.{k}", v, "must be > 0")


NAME_RULE = "a plain name: letters, digits, '.', '_' or '-', no path separators, not '.' or '..'"


def is_plain_name(name: str) -> bool:
    import re

    return bool(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", name or "")) and name not in (".", "..")


@dataclass
class PathsConfig:
    output_root: str = "${project_root:}/outputs"
    workspace: str = "${paths.output_root}/${data.name}"
    data_root: str = "${project_root:}/data"
    shared_data: str = "${oc.env:DISTILL_SHARED_DATA,${project_root:}/../shared/data}"


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

    VERSION: ClassVar[int] = 3  # bump when the generator's output changes (generated folders are re-made)
    seed: int = 13
    n_docs: int = 6000
    n_train: int = 600
    n_test: int = 250
    n_topics: int = 120
    concepts_per_topic: int = 10
    n_background: int = 800
    # Chance that a query writes a concept with a synonym instead of the documents' word.
    p_synonym: float = 0.7
    # Chance that a concept's synonym is a morphological variant of the document word (else an unrelated word).
    p_morph: float = 0.7
    # Fraction of a topic's concepts whose document word also belongs to another topic.
    p_ambiguous: float = 0.25
    # Fraction of topics whose broad topic word is shared with another topic.
    p_ambiguous_topic: float = 0.5
    # Chance that a query names its broad topic word (which documents use).
    p_topic_word: float = 0.85
    p_fresh_query: float = 0.2
    fresh_days: int = 365
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


def _data_schema(fmt: str) -> type:
    """DataConfig with `options` typed as format `fmt`'s options (registered as `<fmt>_data_schema`)."""
    from dataclasses import make_dataclass

    opts = DATA_OPTIONS[fmt]
    return make_dataclass(
        f"{fmt.capitalize()}DataConfig",
        [("format", str, field(default=fmt)), ("options", opts, field(default_factory=opts))],
        bases=(DataConfig,),
    )


@dataclass
class RetrievalConfig:
    k: int = 100
    # Which qrels splits get candidates; null: every split the dataset has.
    splits: list[str] | None = None
    method: str = "lucene"
    k1: float = 1.5
    b: float = 0.75
    # A PyStemmer language ("english") or null for none.
    stemmer: str | None = "english"
    # "en", another bm25s stop-word language, or null for none.
    stopwords: str | None = "en"
    lowercase: bool = True
    # Which document fields are indexed (concatenated).
    fields: list[str] = field(default_factory=lambda: ["title", "text"])

    def __post_init__(self) -> None:
        check(self.k >= 1, "retrieval.k", self.k, "must be >= 1")
        check(self.k1 >= 0, "retrieval.k1", self.k1, "must be >= 0")
        check(0 <= self.b <= 1, "retrieval.b", self.b, "must be in [0, 1]")
        check(bool(self.fields), "retrieval.fields", self.fields, "name at least one document field")


TEACHER_LOSSES = ("bce", "listnet", "ranknet", "lambdaloss")


@dataclass
class TeacherTrainConfig:
    """`make train-teacher` (distill/teacher/train.py): `teacher.train.*`."""

    # scratch (a small BERT built from the corpus), or any hub id / local folder to fine-tune (a new 1-logit head
    # on an encoder such as ../shared/data/all_minilm_l6_v2, or an existing cross-encoder)
    base_model: str = "scratch"
    # bce | listnet | ranknet | lambdaloss (sentence-transformers' cross-encoder losses)
    loss: str = "listnet"
    # 2.6 epochs of the sample world fit inside max_seconds on 2 CPU cores, so the schedule completes
    epochs: float = 2.6
    batch_size: int = 16
    # null: 1e-3 from scratch, 5e-5 for a pretrained base_model
    lr: float | None = None
    warmup_ratio: float = 0.1
    negatives: int = 7
    max_length: int = 128
    seed: int = 0
    # Stop after this many seconds (null: no limit).
    max_seconds: float | None = 170
    # The from-scratch model and tokenizer (base_model=scratch).
    vocab_size: int = 8000
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 1
    intermediate_size: int = 512
    dropout: float = 0.0
    # match: the first attention layer starts as an exact-match detector (match_init); random: BERT's init.
    init: str = "match"
    match_scale: float = 1.0

    def __post_init__(self) -> None:
        from distill.errors import ConfigError

        if self.init not in ("match", "random"):
            raise ConfigError(f"teacher.train.init={self.init!r}: use match or random")
        if self.loss not in TEACHER_LOSSES:
            raise ConfigError(f"teacher.train.loss={self.loss!r}: use one of {TEACHER_LOSSES}")
        for key in (
            "epochs",
            "batch_size",
            "max_length",
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
        ):
            if getattr(self, key) <= 0:
                raise ConfigError(f"teacher.train.{key}={getattr(self, key)} must be positive")
        if self.negatives < 0 or (self.lr is not None and self.lr <= 0):
            raise ConfigError("teacher.train.negatives must be >= 0 and teacher.train.lr > 0")

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1e-3 if self.base_model == "scratch" else 5e-5

    @classmethod
    def from_cfg(cls, node: Any) -> TeacherTrainConfig:
        return from_plain(cls, to_container(node), "teacher.train")


@dataclass
class TeacherConfig:
    # A Hugging Face model id, a local model folder, or "trained" for the workspace's trained teacher.
    model: str = "trained"
    revision: str | None = None
    # Tokens per pair; null: the model's own limit (its folder's max length, capped at its position embeddings).
    max_length: int | None = None
    # The instruction of rerankers that take one (Qwen3-Reranker: "Given a web search query, retrieve relevant
    # passages that answer the query"); null: the folder's default prompt, if any.
    prompt: str | None = None
    # Run the model's own code (models that ship modeling files); only for models you trust.
    trust_remote_code: bool = False
    # Score with a checkpoint whose head would be newly initialised (random scores): benchmarks only.
    allow_untrained_head: bool = False
    # auto | fp32 | bf16 | fp16 | int8 (auto: fp16 on CUDA, bf16 on a CPU with native bf16, fp32 otherwise)
    dtype: str = "auto"
    # Padded tokens per batch (batches are cut by a token budget, not a fixed count).
    batch_tokens: int = 16384
    shard_size: int = 50000
    device: str = "auto"
    # Several teachers in one run; the combined score is the mean of normalised scores.
    ensemble: list[str] = field(default_factory=list)
    # zscore | minmax | rank | none
    ensemble_norm: str = "zscore"
    # torch.compile the teacher (dynamic shapes); pays off on long GPU runs.
    compile: bool = False
    # Delete earlier soft labels instead of resuming them.
    overwrite: bool = False
    num_threads: int | None = None
    train: TeacherTrainConfig = field(default_factory=TeacherTrainConfig)

    def __post_init__(self) -> None:
        check_positive(self, "teacher", "max_length", "batch_tokens", "shard_size", "num_threads")
        check(
            self.ensemble_norm in ("zscore", "minmax", "rank", "none"),
            "teacher.ensemble_norm",
            self.ensemble_norm,
            "use zscore, minmax, rank or none",
        )


@dataclass
class FeatureOptions:
    # Bayesian smoothing of click-through rates: this many pseudo-impressions at the log's mean CTR.
    ctr_prior_weight: float = 10.0
    # Only click-log rows older than this are used (default: the earliest test-query timestamp).
    click_cutoff: str | None = None
    # Examination propensity per position (index 0 unused); null = estimated from the log as CTR(p)/CTR(1).
    propensities: list[float] | None = None
    # "Now" for document ages of queries without a timestamp (default: the newest document).
    reference_time: str | None = None

    def __post_init__(self) -> None:
        w = self.ctr_prior_weight
        check(w >= 0, "features.options.ctr_prior_weight", w, "must be >= 0")


@dataclass
class FeaturesConfig:
    names: list[str] = field(default_factory=list)
    options: FeatureOptions = field(default_factory=FeatureOptions)
    # Stacking: ranker names of trained students (e.g. [bi_encoder_kl, multi_vector_kl]) whose scores the GBDT
    # students add as features (`student:<name>`), learning only on train queries those students never saw
    # (distill/students/stacking.py); not part of features.parquet.
    students: list[str] = field(default_factory=list)


@dataclass
class LabelsConfig:
    # 1.0 = teacher only, 0.0 = human qrels only (both z-scored per query before blending).
    alpha: float = 1.0

    def __post_init__(self) -> None:
        check(0 <= self.alpha <= 1, "student.labels.alpha", self.alpha, "must be in [0, 1]")


@dataclass
class DaskConfig:
    """Train the GBDT student on a Dask cluster (distill.students.gbdt_dask) instead of in this process."""

    # null: no Dask; local: a LocalCluster of `workers` processes here; else a scheduler address (tcp://host:8786)
    cluster: str | None = None
    workers: int = 2
    threads_per_worker: int = 1

    def __post_init__(self) -> None:
        check_positive(self, "student.dask", "workers", "threads_per_worker")


@dataclass
class GBDTConfig:
    """student=lightgbm | student=xgboost (distill.students.gbdt)."""

    _target_: str = "distill.students.gbdt.run"
    name: str = "lightgbm"
    # regression | lambdarank | listnet_kd | ranknet_kd | margin_mse | listmle_kd
    objective: str = "listnet_kd"
    temperature: float = 1.0
    # lambdarank: integer grades per query from teacher scores (quantile | bins)
    grades: int = 5
    grade_method: str = "quantile"
    num_trees: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 31
    max_depth: int = 6
    min_data_in_leaf: int = 20
    early_stopping: int = 30
    val_fraction: float = 0.15
    threads: int = 2
    seed: int = 0
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    dask: DaskConfig = field(default_factory=DaskConfig)

    def __post_init__(self) -> None:
        check_positive(
            self,
            "student",
            "temperature",
            "grades",
            "num_trees",
            "learning_rate",
            "num_leaves",
            "max_depth",
            "min_data_in_leaf",
            "threads",
        )
        check(self.early_stopping >= 0, "student.early_stopping", self.early_stopping, "must be >= 0")
        check(0 < self.val_fraction < 1, "student.val_fraction", self.val_fraction, "must be in (0, 1)")


@dataclass
class NeuralStudentConfig:
    """What every sentence-transformers student shares (distill/students/neural.py): the training examples
    (distill/students/examples.py), the loss, the base model and the trainer's schedule."""

    _target_: str = "distill.students.bi_encoder.run"
    name: str = "bi_encoder"
    # each student's own list: LOSSES below
    loss: str = "kl"
    temperature: float = 1.0
    # teacher: the workspace teacher's tokenizer and encoder weights; scratch: a fresh model of the teacher's
    # shape and tokenizer; or any sentence-transformers / Hugging Face id or local folder.
    base_model: str = "teacher"
    # Positives: "qrels" (judged relevant train documents that the teacher scored) or "teacher" (its top-1).
    positives: str = "qrels"
    negatives: int = 16
    # Hard negatives come from the teacher-scored candidates ranked within the top `negative_depth` by the
    # teacher, skipping any the teacher scores above (positive score - negative_margin): likely false negatives.
    negative_depth: int = 60
    negative_margin: float | None = None  # None: no denoising
    # Examples per positive, each with a fresh sample of negatives (more variety than more epochs).
    samples_per_positive: int = 6
    batch_size: int = 64
    epochs: float = 1.0
    lr: float = 5e-2
    warmup_ratio: float = 0.1
    max_length: int = 128
    seed: int = 0
    max_seconds: float | None = 280.0
    # Retrieval over the whole corpus: how many documents to keep per query.
    retrieve_k: int = 100
    # The share of train queries (a fixed hash split, the same for every student) the student never trains on,
    # so that a GBDT stacked on its scores (features.students) can learn from out-of-sample scores.
    stack_holdout: float = 0.0
    # The teacher's scores as training labels. raw: as they are; zscore: standardised within each example's list,
    # so the loss sees the same spread whatever the teacher's scale (a teacher whose scores barely spread gives
    # a near-uniform KL target, which a student can meet by scoring everything alike).
    labels: str = "raw"

    LOSSES: ClassVar[tuple[str, ...]] = ("margin_mse", "kl")

    def __post_init__(self) -> None:
        check(self.loss in self.LOSSES, "student.loss", self.loss, f"use one of {self.LOSSES}")
        check(self.labels in ("raw", "zscore"), "student.labels", self.labels, "use raw or zscore")
        check(
            self.positives in ("qrels", "teacher"),
            "student.positives",
            self.positives,
            "use qrels or teacher",
        )
        check(
            self.negatives >= 1, "student.negatives", self.negatives, "needs at least 1 negative per example"
        )
        check(is_plain_name(self.name), "student.name", self.name, "use letters, digits, - and _ only")
        check(0 <= self.stack_holdout < 1, "student.stack_holdout", self.stack_holdout, "must be in [0, 1)")
        check_positive(
            self,
            "student",
            "temperature",
            "batch_size",
            "epochs",
            "lr",
            "max_length",
            "retrieve_k",
            "samples_per_positive",
            "negative_depth",
        )

    @classmethod
    def from_cfg(cls, node: Any) -> Any:
        """From the student config node (typed or a plain dict); unknown keys are a `ConfigError` naming them."""
        opts = {k: v for k, v in (to_container(node) or {}).items() if k != "_target_"}
        return from_plain(cls, opts, f"student ({cls.__name__})")


@dataclass
class BiEncoderConfig(NeuralStudentConfig):
    """student=bi_encoder (distill.students.bi_encoder)."""

    # static: a StaticEmbedding model (mean of learned token embeddings, no transformer; the teacher's tokenizer,
    # initialised from the teacher's word embeddings, or random and `embedding_dim` wide when that is set);
    # teacher, scratch or any id / folder as for every neural student.
    base_model: str = "static"
    embedding_dim: int | None = 256
    similarity: str = "dot"
    pooling: str = "mean"
    # The hybrid reranker: student score + w * BM25 score (lexical and learned matching complement each other;
    # cf. CLEAR, Gao et al., ECIR 2021). "auto": the w of BM25_WEIGHTS with the best train-split nDCG@10;
    # a number: that w; null: no hybrid.
    bm25_weight: Any = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        for key, values in {"similarity": ("dot", "cos"), "pooling": ("mean", "cls", "max")}.items():
            check(getattr(self, key) in values, f"student.{key}", getattr(self, key), f"use one of {values}")
        w = self.bm25_weight
        check(
            w is None or w == "auto" or (isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0),
            "student.bm25_weight",
            w,
            "use auto, null or a number >= 0",
        )


@dataclass
class MultiVectorConfig(NeuralStudentConfig):
    """student=multi_vector (distill.students.multi_vector): a late-interaction (ColBERT) student."""

    _target_: str = "distill.students.multi_vector.run"
    name: str = "multi_vector"
    # width of the per-token vectors (the projection after the encoder; ColBERT uses 128)
    dim: int = 128
    query_length: int = 32
    document_length: int = 128
    lr: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "student", "dim", "query_length", "document_length")


@dataclass
class SparseConfig(NeuralStudentConfig):
    """student=sparse (distill.students.sparse): a learned-sparse (SPLADE) student."""

    _target_: str = "distill.students.sparse.run"
    name: str = "sparse"
    lr: float = 3e-5
    labels: str = "zscore"
    # FLOPS regularisation weights (Paria et al., 2020; SPLADE, Formal et al., 2021): higher = sparser
    query_regularizer_weight: float = 5e-5
    document_regularizer_weight: float = 3e-5
    # keep at most this many terms per document / query at inference (null: all the model activates)
    max_active_dims: int | None = None
    # A new MLM head (the teacher's encoder has none) is first taught, alone, for this many steps, to give each
    # token of a text its IDF as weight, so the student starts as an IDF-weighted bag of the text's own words
    # (distill.students.sparse.lexical_head); 0: off
    head_init_steps: int = 200
    # In training, the gradient a term below 0 receives through SPLADE's ReLU, as a fraction of the one it would
    # get above 0 (the forward pass is unchanged); > 0 lets distillation switch on terms a text does not contain
    # (expansion), which the plain ReLU never does (distill.students.sparse.LeakyGradReLU); 0: the plain ReLU
    expansion_gradient: float = 0.0
    # How a term's weights over a text's positions pool into one: sum (SPLADE v1, Formal et al., SIGIR 2021: the
    # weight grows with the term's frequency) or max (SPLADE v2, 2021); a SparseEncoder checkpoint keeps its own
    pooling: str = "sum"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.pooling in ("max", "sum"), "student.pooling", self.pooling, "use max or sum")
        for key in ("query_regularizer_weight", "document_regularizer_weight", "expansion_gradient"):
            check(getattr(self, key) >= 0, f"student.{key}", getattr(self, key), "must be >= 0")
        m = self.max_active_dims
        check(m is None or m > 0, "student.max_active_dims", m, "must be > 0 or null")


@dataclass
class CrossEncoderStudentConfig(NeuralStudentConfig):
    """student=cross_encoder (distill.students.cross_encoder): a smaller cross-encoder distilled from the teacher."""

    _target_: str = "distill.students.cross_encoder.run"
    name: str = "cross_encoder"
    loss: str = "margin_mse"
    # keep the first `layers` transformer layers of the base model (null: all; the classic way to start a
    # smaller student from its teacher, e.g. DistilBERT / TinyBERT)
    layers: int | None = None
    # which of the base's layers to keep: first or last
    keep: str = "first"
    lr: float = 3e-4
    # inference precision of the student's scorer, as teacher.dtype (auto: bf16 on native-bf16 CPUs, fp16 GPU)
    dtype: str = "auto"
    batch_tokens: int = 16384

    LOSSES: ClassVar[tuple[str, ...]] = ("margin_mse", "mse", "listnet", "lambdaloss")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.keep in ("first", "last"), "student.keep", self.keep, "use first or last")
        check(self.layers is None or self.layers >= 1, "student.layers", self.layers, "must be >= 1 or null")
        check(
            self.dtype in ("auto", "fp32", "bf16", "fp16"),
            "student.dtype",
            self.dtype,
            "use auto, fp32, bf16, fp16",
        )
        check_positive(self, "student", "batch_tokens")


@dataclass
class LoadConfig:
    """The cascade simulation's load profile (`evaluate.load.*`, distill.evaluation.cascade): Poisson arrivals at a
    rate that is a fraction of the capacity of the most expensive static setting, with bursts, served FIFO."""

    duration_s: float = 120.0
    base_utilisation: float = 0.5
    burst_utilisation: float = 1.6
    burst_every_s: float = 30.0
    burst_s: float = 8.0
    workers: int = 1
    seed: int = 0

    KEY: ClassVar[str] = "evaluate.load"  # where errors say the value is

    def __post_init__(self) -> None:
        key = self.KEY
        check_positive(self, key, "duration_s", "base_utilisation", "burst_utilisation", "burst_every_s")
        check(self.workers >= 1, f"{key}.workers", self.workers, "must be >= 1")
        check(
            0 <= self.burst_s <= self.burst_every_s,
            f"{key}.burst_s",
            self.burst_s,
            f"must be in [0, {key}.burst_every_s]",
        )


@dataclass
class LoadtestLoad(LoadConfig):
    """`loadtest.load`: the same profile as the simulator's, with errors naming its own keys."""

    KEY: ClassVar[str] = "loadtest.load"


@dataclass
class EvaluateConfig:
    """`make evaluate` (distill/evaluation/stage.py)."""

    split: str = "test"
    # Latency: median over this many queries of scoring their top `latency_candidates` BM25 candidates.
    latency_queries: int = 30
    latency_candidates: int = 100
    # Cascade grid: student reranks BM25's top N, teacher reranks the student's top k (0 = teacher off).
    cascade_n: list[int] = field(default_factory=lambda: [50, 100])
    cascade_k: list[int] = field(default_factory=lambda: [0, 5, 10, 20, 30, 50])
    # Which student the cascade uses ("" = the best by nDCG@10).
    cascade_student: str = ""
    # Per-query latency budgets of the dynamic policy, and the p99 budget for the recommended setting.
    sla_ms: list[float] = field(default_factory=lambda: [20.0, 40.0, 80.0])
    p99_budget_ms: float = 60.0
    load: LoadConfig = field(default_factory=LoadConfig)
    # Students that also retrieve (bi-encoder, multi-vector, sparse) are searched over the whole corpus: top k.
    retrieve_k: int = 100

    def __post_init__(self) -> None:
        check_positive(
            self, "evaluate", "latency_queries", "latency_candidates", "p99_budget_ms", "retrieve_k"
        )
        check(all(n > 0 for n in self.cascade_n), "evaluate.cascade_n", self.cascade_n, "each must be > 0")
        check(all(k >= 0 for k in self.cascade_k), "evaluate.cascade_k", self.cascade_k, "each must be >= 0")
        check(all(b > 0 for b in self.sla_ms), "evaluate.sla_ms", self.sla_ms, "each must be > 0")


@dataclass
class DemoConfig:
    """`make demo`: which students it trains (configs/student/<name>.yaml each) and overrides of their options,
    e.g. `++demo.overrides.bi_encoder.loss=margin_mse`."""

    students: list[str] = field(default_factory=lambda: ["lightgbm", "xgboost", "bi_encoder", "multi_vector"])
    overrides: dict[str, Any] = field(default_factory=dict)
    # ranker names of students above for a LightGBM stacked on their scores (lightgbm_stack); [] = none
    stack: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in self.students:
            check(is_plain_name(name), "demo.students", name, "name files of configs/student/")


@dataclass
class DashboardConfig:
    """`make dashboard` (distill/dashboard.py)."""

    # auto: TensorBoard when the workspace has tensorboard/ event files, else MLflow's UI on its mlflow.db
    backend: str = "auto"
    # another folder to serve (null: the workspace), e.g. outputs/ for every workspace at once
    dir: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None  # null: a free port

    def __post_init__(self) -> None:
        check(
            self.backend in ("auto", "tensorboard", "mlflow"),
            "dashboard.backend",
            self.backend,
            "use auto, tensorboard or mlflow",
        )


@dataclass
class ServeConfig:
    """`make serve` (distill/serving): BM25 top `n` -> the student -> the teacher on the student's top k."""

    host: str = "127.0.0.1"
    port: int = 8000
    # a ranker name of `make evaluate`'s table (e.g. bi_encoder_kl); "" = the student the cascade simulation chose
    student: str = ""
    n: int = 100  # BM25 depth the student reranks
    ks: list[int] = field(default_factory=lambda: [0, 5, 10, 20, 30, 50])  # teacher depths (0 = teacher off)
    policy: str = "dynamic"  # dynamic: the largest k that fits sla_ms | static: always static_k
    static_k: int = 50
    sla_ms: float = 150.0
    # hysteresis: a deeper k only after hold_s seconds of requests whose wait was <= raise_margin x the slack
    # it leaves (sla_ms - its service time)
    raise_margin: float = 0.8
    hold_s: float = 1.0
    workers: int = 1  # requests served at once (FIFO queue in front)
    max_k: int = 100  # the most results a request may ask for
    max_query_chars: int = 1000
    warmup_queries: int = 10  # queries run at each depth at start to measure the costs
    cost_smoothing: float = 0.1  # weight of each new measurement in the running cost estimates
    # the controller plans with mean + cost_deviations x mean absolute deviation of each cost (the tail fits)
    cost_deviations: float = 2.0

    def __post_init__(self) -> None:
        check(self.policy in ("dynamic", "static"), "serve.policy", self.policy, "use dynamic or static")
        check_positive(self, "serve", "n", "sla_ms", "workers", "max_k", "max_query_chars", "warmup_queries")
        check(bool(self.ks) and min(self.ks) >= 0, "serve.ks", self.ks, "give depths >= 0")
        check(max(self.ks) <= self.n, "serve.ks", self.ks, "each depth must be <= serve.n")
        check(self.static_k in self.ks, "serve.static_k", self.static_k, f"must be one of serve.ks={self.ks}")
        check(0 < self.raise_margin <= 1, "serve.raise_margin", self.raise_margin, "must be in (0, 1]")
        check(0 < self.cost_smoothing <= 1, "serve.cost_smoothing", self.cost_smoothing, "must be in (0, 1]")
        check(self.cost_deviations >= 0, "serve.cost_deviations", self.cost_deviations, "must be >= 0")
        check(0 < self.port < 65536, "serve.port", self.port, "must be a TCP port")


@dataclass
class LoadtestConfig:
    """`make loadtest` (distill/serving/loadtest.py): the test queries against a local server at the load
    profile of the simulator (rates relative to the measured capacity at the deepest static k)."""

    load: LoadtestLoad = field(
        default_factory=lambda: LoadtestLoad(
            duration_s=60.0, base_utilisation=0.5, burst_utilisation=2.0, burst_every_s=20.0, burst_s=6.0
        )
    )
    policies: list[str] = field(default_factory=lambda: ["static", "dynamic"])
    max_requests: int = 5000  # a bound on the requests of one policy's run
    timeout_s: float = 60.0  # per request
    start_timeout_s: float = 300.0  # for the server to load and answer /health

    def __post_init__(self) -> None:
        for p in self.policies:
            check(p in ("static", "dynamic"), "loadtest.policies", p, "use static and/or dynamic")
        check_positive(self, "loadtest", "max_requests", "timeout_s", "start_timeout_s")


@dataclass
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    # Students differ in their options: each student/*.yaml names its own schema.
    student: Any = None
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    # one entry per selected configs/logger/<name>.yaml: {<name>: {_target_: <Tracker class>, options...}}
    logger: dict[str, Any] = field(default_factory=dict)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    demo: DemoConfig = field(default_factory=lambda: DemoConfig())
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    loadtest: LoadtestConfig = field(default_factory=LoadtestConfig)
    seed: int = 0


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="paths", name="paths_schema", node=PathsConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
    for fmt in DATA_OPTIONS:
        cs.store(group="data", name=f"{fmt}_data_schema", node=_data_schema(fmt))
    cs.store(group="retrieval", name="retrieval_schema", node=RetrievalConfig)
    cs.store(group="teacher", name="teacher_schema", node=TeacherConfig)
    cs.store(group="features", name="features_schema", node=FeaturesConfig)
    cs.store(group="student", name="gbdt_schema", node=GBDTConfig)
    cs.store(group="student", name="bi_encoder_schema", node=BiEncoderConfig)
    cs.store(group="student", name="multi_vector_schema", node=MultiVectorConfig)
    cs.store(group="student", name="sparse_schema", node=SparseConfig)
    cs.store(group="student", name="cross_encoder_schema", node=CrossEncoderStudentConfig)
    cs.store(group="evaluate", name="evaluate_schema", node=EvaluateConfig)


register()


def validate(cfg: DictConfig) -> None:
    """Run every typed group's value checks (`__post_init__`): composing checks keys and types, not ranges."""
    from omegaconf.errors import MissingMandatoryValue

    from distill.errors import ConfigError

    try:
        for key in (
            "paths",
            "data",
            "retrieval",
            "teacher",
            "features",
            "logger",
            "evaluate",
            "student",
            "serve",
            "loadtest",
        ):
            node = cfg.get(key) if isinstance(cfg, DictConfig) else None
            if isinstance(node, DictConfig) and OmegaConf.get_type(node) not in (dict, None):
                check_known_keys(node, key)
                OmegaConf.to_object(node)
    except MissingMandatoryValue as e:
        raise ConfigError(f"{e.full_key} has no value: set it on the command line ({e.full_key}=...)") from e


def refuse_unknown_keys(cls: type, keys: Any, where: str) -> list[str]:
    """The field names of dataclass `cls`; a key among `keys` that is not one is a `ConfigError` naming it."""
    from distill.errors import ConfigError

    known = sorted(f.name for f in fields(cls))
    unknown = sorted(set(keys) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {known}")
    return known


def check_known_keys(node: DictConfig, where: str) -> None:
    """A key that a typed node's dataclass does not declare is a `ConfigError` naming it. Hydra lets
    `+group.key=value` append one, and `OmegaConf.to_object` would keep it as a stray attribute."""
    from dataclasses import is_dataclass

    kind = OmegaConf.get_type(node)
    if kind is None or not is_dataclass(kind):
        return
    known = refuse_unknown_keys(kind, (str(k) for k in node), where)
    for k in known:
        child = node._get_node(k)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            check_known_keys(child, f"{where}.{k}")


def from_plain(cls: type, values: dict[str, Any] | None, where: str) -> Any:
    """Dataclass `cls` from plain values that did not come through Hydra (a saved model's metadata, a command
    line's KEY=VALUE pairs, a test): merged onto its typed schema, so keys and types are checked as composing
    checks them (strings convert: "true" -> True, "3" -> 3), then `__post_init__` checks the values. A bad key or
    type is a `ConfigError` naming it."""
    from omegaconf.errors import ConfigKeyError, ValidationError

    from distill.errors import ConfigError

    values = dict(values or {})
    refuse_unknown_keys(cls, values, where)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), values))
    except (ValidationError, ConfigKeyError) as e:
        raise ConfigError(f"{where}: {' '.join(str(e).split())}") from e


def load_callable(path: str, what: str) -> Any:
    """`module:function` or `module.function` (or a class) -> the object; a `ConfigError` naming `what` if not."""
    import importlib

    from distill.errors import ConfigError

    module, _, name = path.replace(":", ".").rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"{what}: cannot import {path!r} ({e})") from e


def to_container(cfg: DictConfig | Any) -> Any:
    """The resolved config as plain Python objects."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def config_hash(*nodes: Any) -> str:
    """A short stable hash of resolved config nodes (used to tell whether a stage's output is stale)."""
    payload = json.dumps([to_container(n) for n in nodes], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
