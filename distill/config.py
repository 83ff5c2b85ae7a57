"""Typed config schemas, registered in Hydra's ConfigStore.

Every group option under `configs/` is merged into one of these dataclasses, so a misspelt key or a value of
the wrong type fails when the config is composed, naming the key. Import this module before composing a
config (the entry points in `scripts/` and `tests/conftest.py` do).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"

if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))


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
    # Formats without splits: the fraction of judged queries put in the test split (the rest is train).
    test_fraction: float = 0.5
    split_seed: int = 0
    # Format-specific options, checked by the converter (unknown keys are an error).
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RetrievalConfig:
    k: int = 100
    splits: list[str] = field(default_factory=lambda: ["train", "test"])
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
    # auto | fp32 | bf16 | fp16 (auto: fp16 on CUDA, fp32 otherwise)
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
    # `make train-teacher` options (distill.teacher.train.TeacherTrainConfig).
    train: dict[str, Any] = field(default_factory=dict)


@dataclass
class FeaturesConfig:
    names: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LabelsConfig:
    # 1.0 = teacher only, 0.0 = human qrels only (both z-scored per query before blending).
    alpha: float = 1.0


@dataclass
class DaskConfig:
    """Train the GBDT student on a Dask cluster (distill.students.gbdt_dask) instead of in this process."""

    # null: no Dask; local: a LocalCluster of `workers` processes here; else a scheduler address (tcp://host:8786)
    cluster: str | None = None
    workers: int = 2
    threads_per_worker: int = 1


@dataclass
class GBDTConfig:
    """student=lightgbm | student=xgboost (distill.students.gbdt)."""

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


@dataclass
class LoggerConfig:
    # wandb | none
    backend: str = "wandb"
    # offline | online | disabled
    mode: str = "offline"
    project: str = "distill"
    entity: str | None = None
    dir: str = "${paths.workspace}"
    tags: list[str] = field(default_factory=list)


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
    # The load profile (distill.evaluation.cascade.Load).
    load: dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    # Students differ in their options: each student/*.yaml names its own schema.
    student: Any = None
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    # `make demo`: overrides of the bi-encoder student it trains (configs/student/bi_encoder.yaml).
    demo: dict[str, Any] = field(default_factory=lambda: {"bi_encoder": {}})
    seed: int = 0


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="paths", name="paths_schema", node=PathsConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="retrieval", name="retrieval_schema", node=RetrievalConfig)
    cs.store(group="teacher", name="teacher_schema", node=TeacherConfig)
    cs.store(group="features", name="features_schema", node=FeaturesConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    cs.store(group="student", name="gbdt_schema", node=GBDTConfig)
    cs.store(group="evaluate", name="evaluate_schema", node=EvaluateConfig)


register()


def options_to(cls: type, opts: dict[str, Any] | None, where: str) -> Any:
    """Build dataclass `cls` from a plain options dict; unknown keys are a `ConfigError` naming them."""
    from dataclasses import fields

    from distill.errors import ConfigError

    known = sorted(f.name for f in fields(cls))
    unknown = sorted(set(opts or {}) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {known}")
    return cls(**(opts or {}))


def to_container(cfg: DictConfig | Any) -> Any:
    """The resolved config as plain Python objects."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def config_hash(*nodes: Any) -> str:
    """A short stable hash of resolved config nodes (used to tell whether a stage's output is stale)."""
    payload = json.dumps([to_container(n) for n in nodes], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
