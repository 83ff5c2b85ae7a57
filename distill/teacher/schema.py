"""`teacher.*` (scoring, distill/teacher/scoring.py) and `teacher.train.*` (distill/teacher/train.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distill.config import check, check_choice, check_fraction, check_positive, from_plain, to_container

# teacher.dtype: auto = fp16 on CUDA, bf16 on a CPU with native bf16, else static int8 or fp32 (checked on the
# job's own pairs)
DTYPES = ("auto", "fp32", "bf16", "fp16", "int8")

TEACHER_LOSSES = ("bce", "listnet", "ranknet", "lambdaloss")


@dataclass
class TeacherTrainConfig:
    """`make train-teacher` (distill/teacher/train.py): `teacher.train.*`."""

    # scratch (a small BERT built from the corpus), or any hub id / local folder to fine-tune (a new 1-logit head
    # on an encoder such as ../shared/data/all_minilm_l6_v2, or an existing cross-encoder)
    base_model: str = "scratch"
    # bce | listnet | ranknet | lambdaloss (sentence-transformers' cross-encoder losses)
    loss: str = "listnet"
    # the length of training: 2.6 epochs of the sample world take ~100 s on 2 quiet CPU cores
    epochs: float = 2.6
    batch_size: int = 16
    # null: from scratch 2e-4 from the lexical start (it already ranks: larger steps undo it) and 1e-3 otherwise,
    # 5e-5 for a pretrained base_model
    lr: float | None = None
    warmup_ratio: float = 0.1
    negatives: int = 7
    max_length: int = 128
    seed: int = 0
    # A guard: stop after this many seconds, with a warning (null: no limit). It sits well above the sample world's
    # 2.6 epochs (~100 s on 2 quiet cores) so that a busy machine trains the same teacher, only slower: at 170 s a
    # demo beside the test suite was cut at step 74 (test nDCG@10 0.4504 against 0.6003)
    max_seconds: float | None = 480
    # The from-scratch model and tokenizer (base_model=scratch).
    vocab_size: int = 8000
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 1
    intermediate_size: int = 512
    dropout: float = 0.0
    # lexical: the whole model starts as an idf-weighted, saturating match over its tokens (lexical_init: one head,
    # two layers or more); match: only the first attention layer starts as an exact-match detector (match_init);
    # random: BERT's init.
    init: str = "lexical"
    match_scale: float = 1.0
    # init=lexical: a query token found n times in the document counts n / (saturation + n), as BM25's k1 does
    saturation: float = 1.2
    # 0: off. Else the words that at least this many training queries hold and the corpus lacks (aliases, which the
    # corpus's vocabulary would cut into characters) become tokens of their own, beyond vocab_size, each started
    # as the document tokens it predicts in the training lists (translation_init)
    translate_min_queries: int = 2

    def __post_init__(self) -> None:
        key = "teacher.train"
        check_choice(self, key, "init", ("match", "lexical", "random"))
        check_choice(self, key, "loss", TEACHER_LOSSES)
        check_positive(
            self,
            key,
            "epochs",
            "batch_size",
            "max_length",
            "max_seconds",
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "lr",
            "match_scale",
            "saturation",
        )
        check(self.negatives >= 0, f"{key}.negatives", self.negatives, "must be >= 0")
        check(
            self.translate_min_queries >= 0,
            f"{key}.translate_min_queries",
            self.translate_min_queries,
            "must be >= 0",
        )
        check(self.saturation >= 1, f"{key}.saturation", self.saturation, "must be >= 1 (BM25's k1 is 1.2-2)")
        check_fraction(self, key, "warmup_ratio")
        check_fraction(self, key, "dropout", closed=False)
        check(
            self.hidden_size % self.num_heads == 0,
            f"{key}.hidden_size",
            self.hidden_size,
            f"must be a multiple of teacher.train.num_heads={self.num_heads} (each head takes an equal share)",
        )

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        if self.base_model != "scratch":
            return 5e-5
        return 2e-4 if self.init == "lexical" else 1e-3

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
    # A text file holding the instruction (for one with commas or quotes, which a command line mangles).
    prompt_file: str | None = None
    # Run the model's own code (models that ship modeling files); only for models you trust.
    trust_remote_code: bool = False
    # Score with a checkpoint whose head would be newly initialised (random scores): benchmarks only.
    allow_untrained_head: bool = False
    # auto | fp32 | bf16 | fp16 | int8 (auto: fp16 on CUDA, bf16 on a CPU with native bf16, else static int8
    # where OpenVINO is installed and it passes the check below and is faster, else fp32). int8: OpenVINO + NNCF,
    # calibrated on the job's own pairs, encoder cross-encoders on CPU (distill/teacher/int8.py)
    dtype: str = "auto"
    # Padded tokens per batch (batches are cut by a token budget, not a fixed count).
    batch_tokens: int = 16384
    # causal-LM rerankers: encode each query's shared token prefix (template, instruction, query) once and score
    # only the suffixes on its cache (distill/teacher/prefix.py). auto: where the prefix is at least
    # prefix_min_share of a pair's tokens; on: always (refused for encoders); off: never
    prefix_cache: str = "auto"
    prefix_min_share: float = 0.2
    # A precision other than fp32 first scores this many of the job's pairs (whole queries, spread over the
    # candidates) in fp32 and in itself; dtype=auto keeps it only when the ranking holds (Spearman >=
    # min_spearman, mean per-query Kendall >= min_kendall), else scores in fp32. 0: no check
    calibration_pairs: int = 512
    min_spearman: float = 0.999
    min_kendall: float = 0.98
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
        check_choice(self, "teacher", "ensemble_norm", ("zscore", "minmax", "rank", "none"))
        check_choice(self, "teacher", "dtype", DTYPES)
        check_choice(self, "teacher", "prefix_cache", ("auto", "on", "off"))
        check_fraction(self, "teacher", "prefix_min_share", "min_kendall")
        check(0 <= self.min_spearman <= 1, "teacher.min_spearman", self.min_spearman, "must be in [0, 1]")
        check(
            self.calibration_pairs >= 0,
            "teacher.calibration_pairs",
            self.calibration_pairs,
            "must be >= 0 (0: no check)",
        )
        check(
            self.dtype != "int8" or self.calibration_pairs > 0,
            "teacher.calibration_pairs",
            self.calibration_pairs,
            "teacher.dtype=int8 is calibrated on the job's own pairs: give at least 1 (512 by default)",
        )
        check(
            bool(str(self.model).strip()), "teacher.model", self.model, "name a model id, a folder or trained"
        )
        check(
            self.prompt is None or self.prompt_file is None,
            "teacher.prompt_file",
            self.prompt_file,
            "give teacher.prompt or teacher.prompt_file, not both",
        )
