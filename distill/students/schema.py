"""The students' typed configs (`student.*`): one schema per student, named by its `configs/student/<name>.yaml`
(`defaults: [<name>_schema]`). GBDT students have one schema per library, with that library's own parameter
names; neural students share `NeuralStudentConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from distill.config import (
    DaskConfig,
    check,
    check_fraction,
    check_positive,
    from_plain,
    is_plain_name,
    to_container,
)
from distill.objectives import OBJECTIVES


@dataclass
class LabelsConfig:
    # 1.0 = teacher only, 0.0 = human qrels only (both z-scored per query before blending).
    alpha: float = 1.0

    def __post_init__(self) -> None:
        check(0 <= self.alpha <= 1, "student.labels.alpha", self.alpha, "must be in [0, 1]")


@dataclass
class StudentConfig:
    """What every student's config holds: the function that trains it, its name (the model folder and the start
    of its ranker names), its seed, and the one coverage rule of the soft labels it learns from
    (distill/students/coverage.py)."""

    _target_: str = ""
    name: str = "student"
    seed: int = 0
    # the share of train queries the soft labels must cover before the student trains (it trains on those)
    min_label_coverage: float = 0.95

    def __post_init__(self) -> None:
        check(is_plain_name(self.name), "student.name", self.name, "use letters, digits, - and _ only")
        check(
            0 < self.min_label_coverage <= 1,
            "student.min_label_coverage",
            self.min_label_coverage,
            "must be in (0, 1]",
        )


GBDT_OBJECTIVES = ("lambdarank", *OBJECTIVES)


@dataclass
class GBDTConfig(StudentConfig):
    """What both GBDT students share (distill.students.gbdt); each library's schema adds its own parameters
    under the library's own names, so a key the chosen library does not take is refused when composing."""

    LIBRARY: ClassVar[str] = ""
    READS: ClassVar[frozenset[str]] = frozenset({"features"})  # beyond candidates and soft labels
    _target_: str = "distill.students.gbdt.run"
    # lambdarank | regression | listnet_kd | ranknet_kd | margin_mse | listmle_kd | module.Class of your own
    objective: str = "listnet_kd"
    temperature: float = 1.0
    # lambdarank and validation: integer grades per query from teacher scores (quantile | bins)
    grades: int = 5
    grade_method: str = "quantile"
    num_trees: int = 300
    learning_rate: float = 0.05
    early_stopping: int = 30
    val_fraction: float = 0.15
    threads: int = 2
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    dask: DaskConfig = field(default_factory=DaskConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "student", "temperature", "grades", "num_trees", "learning_rate", "threads")
        check(self.early_stopping >= 0, "student.early_stopping", self.early_stopping, "must be >= 0")
        check(0 < self.val_fraction < 1, "student.val_fraction", self.val_fraction, "must be in (0, 1)")
        check(
            self.grade_method in ("quantile", "bins"),
            "student.grade_method",
            self.grade_method,
            "use quantile or bins",
        )
        check(
            self.objective in GBDT_OBJECTIVES or "." in self.objective,
            "student.objective",
            self.objective,
            f"use one of {GBDT_OBJECTIVES} or module.Class of your own",
        )

    def library_params(self) -> dict[str, Any]:
        """This library's own parameters, under its own names."""
        raise NotImplementedError


@dataclass
class LightGBMConfig(GBDTConfig):
    """student=lightgbm: LightGBM's parameters under LightGBM's names."""

    LIBRARY: ClassVar[str] = "lightgbm"
    name: str = "lightgbm"
    num_leaves: int = 31
    # -1: no limit (LightGBM's default; trees are bounded by num_leaves)
    max_depth: int = -1
    min_data_in_leaf: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.num_leaves >= 2, "student.num_leaves", self.num_leaves, "must be >= 2")
        check(
            self.max_depth == -1 or self.max_depth >= 1,
            "student.max_depth",
            self.max_depth,
            "use -1 (no limit) or >= 1",
        )
        check(self.min_data_in_leaf >= 1, "student.min_data_in_leaf", self.min_data_in_leaf, "must be >= 1")

    def library_params(self) -> dict[str, Any]:
        return {
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "min_data_in_leaf": self.min_data_in_leaf,
        }


@dataclass
class XGBoostConfig(GBDTConfig):
    """student=xgboost: XGBoost's parameters under XGBoost's names."""

    LIBRARY: ClassVar[str] = "xgboost"
    name: str = "xgboost"
    max_depth: int = 6
    min_child_weight: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.max_depth >= 1, "student.max_depth", self.max_depth, "must be >= 1")
        check(self.min_child_weight >= 0, "student.min_child_weight", self.min_child_weight, "must be >= 0")

    def library_params(self) -> dict[str, Any]:
        return {"max_depth": self.max_depth, "min_child_weight": self.min_child_weight}


@dataclass
class NeuralStudentConfig(StudentConfig):
    """What every sentence-transformers student shares (distill/students/neural.py): the training examples
    (distill/students/examples.py), the loss, the base model and the trainer's schedule."""

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
    # A guard, not a schedule: training stops here, and says so in its closing line and its record (cut_by), if
    # the schedule (epochs) has not ended; the model would then depend on the machine's speed. Every student's
    # YAML schedule ends within about 5 minutes on the sample world on 2 CPU cores; raise it (or null: no limit)
    # for a large corpus.
    max_seconds: float | None = 1800.0
    # Retrieval over the whole corpus: how many documents to keep per query.
    retrieve_k: int = 100
    # The share of train queries (a fixed hash split, the same for every student) the student never trains on,
    # so that a GBDT stacked on its scores (features.students) can learn from out-of-sample scores.
    stack_holdout: float = 0.0
    # The teacher's scores as training labels. raw: as they are; zscore: standardised within each example's list,
    # so the loss sees the same spread whatever the teacher's scale (a teacher whose scores barely spread gives
    # a near-uniform KL target, which a student can meet by scoring everything alike).
    label_norm: str = "raw"

    LOSSES: ClassVar[tuple[str, ...]] = ("margin_mse", "kl")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.loss in self.LOSSES, "student.loss", self.loss, f"use one of {self.LOSSES}")
        check(
            self.label_norm in ("raw", "zscore"), "student.label_norm", self.label_norm, "use raw or zscore"
        )
        check(
            self.positives in ("qrels", "teacher"),
            "student.positives",
            self.positives,
            "use qrels or teacher",
        )
        check(
            self.negatives >= 1, "student.negatives", self.negatives, "needs at least 1 negative per example"
        )
        check(0 <= self.stack_holdout < 1, "student.stack_holdout", self.stack_holdout, "must be in [0, 1)")
        check_fraction(self, "student", "warmup_ratio")
        m = self.negative_margin
        check(m is None or m >= 0, "student.negative_margin", m, "must be >= 0 or null")
        check_positive(
            self,
            "student",
            "temperature",
            "batch_size",
            "epochs",
            "lr",
            "max_length",
            "max_seconds",
            "retrieve_k",
            "samples_per_positive",
            "negative_depth",
        )

    @classmethod
    def from_cfg(cls, node: Any) -> Any:
        """From the student config node (typed or a plain dict); unknown keys are a `ConfigError` naming them."""
        return from_plain(cls, to_container(node) or {}, f"student ({cls.__name__})")


@dataclass
class BiEncoderConfig(NeuralStudentConfig):
    """student=bi_encoder (distill.students.bi_encoder)."""

    _target_: str = "distill.students.bi_encoder.run"
    name: str = "bi_encoder"
    # static: a StaticEmbedding model (mean of learned token embeddings, no transformer; the teacher's tokenizer,
    # initialised from the teacher's word embeddings, or random and `embedding_dim` wide when that is set);
    # teacher, scratch or any id / folder as for every neural student.
    base_model: str = "static"
    # null: the teacher's word embeddings, which hold what it learned of aliases (its translation start); on the
    # sample world (version 4) 0.5729 test nDCG@10 against 0.4466 for 256 random dimensions (docs/results.md)
    embedding_dim: int | None = None
    # dot or cos: what training optimises, evaluation and serving score with, and the saved model's
    # similarity_fn_name (so SentenceTransformer(folder).similarity scores as this project does); cos 0.6605
    # against dot 0.5729 on the sample world (version 4)
    similarity: str = "cos"
    # on the sample world (version 4), at the YAML's other defaults: 1e-2 0.6664 test nDCG@10, 5e-2 0.6094; as the
    # demo trains it (3 samples per positive, 30% held out): 0.6784 against 0.6380 (docs/results.md)
    lr: float = 1e-2
    pooling: str = "mean"
    # The hybrid reranker: student score + w * BM25 score (lexical and learned matching complement each other;
    # cf. CLEAR, Gao et al., ECIR 2021). "auto": the w of BM25_WEIGHTS with the best train-split nDCG@10;
    # a number: that w; null: no hybrid.
    bm25_weight: Any = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        for key, values in {"similarity": ("dot", "cos"), "pooling": ("mean", "cls", "max")}.items():
            check(getattr(self, key) in values, f"student.{key}", getattr(self, key), f"use one of {values}")
        check_positive(self, "student", "embedding_dim")
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
    lr: float = 1e-3
    negatives: int = 4
    # one epoch of one example per positive: 488 steps, about 5 minutes on 2 CPU cores on the sample world
    # (version 4: test nDCG@10 0.6722, 93% of the teacher's gain; docs/results.md)
    samples_per_positive: int = 1
    batch_size: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "student", "dim", "query_length", "document_length")


@dataclass
class SparseConfig(NeuralStudentConfig):
    """student=sparse (distill.students.sparse): a learned-sparse (SPLADE) student."""

    _target_: str = "distill.students.sparse.run"
    name: str = "sparse"
    # with the loss at the labels' sharpness (sparse.start_spread), on the sample world (version 4) at the other
    # defaults: 1e-4 0.6161 test nDCG@10, 3e-5 0.6114, 3e-4 0.5999 (docs/results.md)
    lr: float = 1e-4
    negatives: int = 4
    samples_per_positive: int = 2
    batch_size: int = 32
    # half an epoch (490 steps) of texts cut to 48 tokens: about 4 minutes on 2 CPU cores on the sample world, where
    # a quarter epoch at 128 tokens took 6.6 minutes and kept 67% of the teacher's gain against 71% (docs/results.md).
    # 48 tokens suit the sample world's short documents; raise it for longer passages (training logs the share it
    # cuts)
    epochs: float = 0.5
    max_length: int = 48
    label_norm: str = "zscore"
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
        check(self.head_init_steps >= 0, "student.head_init_steps", self.head_init_steps, "must be >= 0")


@dataclass
class CrossEncoderStudentConfig(NeuralStudentConfig):
    """student=cross_encoder (distill.students.cross_encoder): a smaller cross-encoder distilled from the teacher."""

    _target_: str = "distill.students.cross_encoder.run"
    name: str = "cross_encoder"
    loss: str = "margin_mse"
    # the teacher's scores (after label_norm) are divided by this before the loss sees them
    label_scale: float = 1.0
    # keep the first `layers` transformer layers of the base model (null: all; the classic way to start a
    # smaller student from its teacher, e.g. DistilBERT / TinyBERT)
    layers: int | None = None
    # which of the base's layers to keep: first or last
    keep: str = "first"
    lr: float = 3e-4
    max_length: int = 64
    negatives: int = 4
    samples_per_positive: int = 2
    batch_size: int = 16
    # inference precision of the student's scorer, as teacher.dtype (auto: bf16 on native-bf16 CPUs, fp16 GPU)
    dtype: str = "auto"
    batch_tokens: int = 16384
    # base_model=lexical: a small model built from scratch and started as `make train-teacher` starts a teacher
    # from scratch (teacher.train's vocabulary from the corpus, lexical_init, the training queries' own words
    # from translation_init), at this width (null: teacher.train's), one head and `layers` layers (null: 2)
    hidden_size: int | None = None
    intermediate_size: int | None = None

    LOSSES: ClassVar[tuple[str, ...]] = ("margin_mse", "mse", "listnet", "lambdaloss")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.keep in ("first", "last"), "student.keep", self.keep, "use first or last")
        check(self.layers is None or self.layers >= 1, "student.layers", self.layers, "must be >= 1 or null")
        lexical = self.base_model == "lexical"
        for key in ("hidden_size", "intermediate_size"):
            value = getattr(self, key)
            check(
                value is None or lexical, f"student.{key}", value, "is for base_model=lexical; set it to null"
            )
        check(
            self.hidden_size is None or self.hidden_size >= 24,
            "student.hidden_size",
            self.hidden_size,
            "must be >= 24 (lexical_init's token, match, segment and idf dimensions)",
        )
        check(
            self.intermediate_size is None or self.intermediate_size >= 1,
            "student.intermediate_size",
            self.intermediate_size,
            "must be >= 1 or null",
        )
        check(
            not lexical or self.layers is None or self.layers >= 2,
            "student.layers",
            self.layers,
            "base_model=lexical needs 2 layers or more (lexical_init's match and pooling layers)",
        )
        check(
            self.dtype in ("auto", "fp32", "bf16", "fp16"),
            "student.dtype",
            self.dtype,
            "use auto, fp32, bf16, fp16",
        )
        check_positive(self, "student", "batch_tokens", "label_scale")
