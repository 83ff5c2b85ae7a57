"""The root config and the one place every schema is registered in Hydra's ConfigStore.

Each room owns its schema beside its code (`distill/<room>/schema.py`, `distill/dashboard.py`); this module
puts them together as `Config` (what `configs/config.yaml` composes onto) and registers every group's schema
under the name its YAML's `defaults` list gives (`<group>_schema`, `<name>_schema` for students,
`<format>_data_schema` for datasets). Entry points import it before composing (`distill/cli.py`, and
`tests/conftest.py`); code outside `@hydra.main` composes through `compose_config`, defined here. `make demo`'s
own options (`DemoConfig`) live here too: the demo is this root's only stage that has no room of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from distill.config import CONFIG_DIR, PathsConfig, check, is_plain_name
from distill.dashboard import DashboardConfig
from distill.data.schema import DATA_OPTIONS, DataConfig, data_schema
from distill.evaluation.schema import EvaluateConfig
from distill.export.schema import ExportConfig
from distill.features.schema import FeaturesConfig
from distill.retrieval.schema import RetrievalConfig
from distill.serving.schema import LoadtestConfig, ServeConfig
from distill.students.schema import (
    BiEncoderConfig,
    CrossEncoderStudentConfig,
    LightGBMConfig,
    MultiVectorConfig,
    SparseConfig,
    XGBoostConfig,
)
from distill.teacher.schema import TeacherConfig

# student=<name> YAMLs name these (`defaults: [<name>_schema]`)
STUDENT_SCHEMAS: dict[str, type] = {
    "lightgbm_schema": LightGBMConfig,
    "xgboost_schema": XGBoostConfig,
    "bi_encoder_schema": BiEncoderConfig,
    "multi_vector_schema": MultiVectorConfig,
    "sparse_schema": SparseConfig,
    "cross_encoder_schema": CrossEncoderStudentConfig,
}


@dataclass
class DemoConfig:
    """`make demo`: which students it trains (configs/student/<name>.yaml each), overrides of their options
    (`++demo.overrides.bi_encoder.loss=margin_mse`), and the students a stacked LightGBM reads."""

    students: list[str] = field(default_factory=lambda: ["lightgbm", "xgboost", "bi_encoder", "multi_vector"])
    # sized so that the demo fits 10 minutes on 2 CPU cores, by amounts of training (never by a time limit, so
    # the same seed gives the same students on any machine): the multi-vector student half its YAML's epoch (244
    # steps, about 3 minutes on 2 cores); stack_holdout: the queries the bi-encoder leaves out so that the
    # stacked LightGBM learns leak-free on them
    overrides: dict[str, Any] = field(
        default_factory=lambda: {
            "bi_encoder": {"samples_per_positive": 3, "stack_holdout": 0.3},
            "multi_vector": {"epochs": 0.5},
        }
    )
    # ranker names of students above for a LightGBM stacked on their scores (lightgbm_stack); [] = none
    stack: list[str] = field(default_factory=lambda: ["bi_encoder_kl", "bi_encoder_kl+bm25"])
    # the stacked LightGBM's options, over configs/student/lightgbm.yaml and demo.overrides.lightgbm. It learns
    # from the ~150 training queries the bi-encoder left out, so it learns from their judgements too (labels.alpha
    # 0.5: teacher scores and qrels, each standardised per query, half and half) and with small trees. On the
    # sample world (version 4), test nDCG@10 over seeds 0-2: 0.7118, 0.7125, 0.7090 with the translation features
    # (the teacher: 0.6895). Before them: 0.6952, 0.7004, 0.6993; from the teacher's scores alone, same trees,
    # 0.6648, 0.6685, 0.6626; with LightGBM's default trees 0.6895, 0.6891, 0.6908 (docs/results.md)
    # temperature 1: the stack's labels mix the judgements in; at LightGBM's YAML temperature (2) it measured
    # 0.7068 against 0.7138 (seed 13) and 0.6476 against 0.6454 (world seed 14)
    stack_overrides: dict[str, Any] = field(
        default_factory=lambda: {
            "labels": {"alpha": 0.5},
            "num_leaves": 7,
            "min_data_in_leaf": 100,
            "temperature": 1.0,
        }
    )

    def __post_init__(self) -> None:
        for name in self.students:
            check(is_plain_name(name), "demo.students", name, "name files of configs/student/")
        known = {p.stem for p in (CONFIG_DIR / "student").glob("*.yaml")}
        unknown = sorted(set(self.overrides) - known)
        check(not unknown, "demo.overrides", unknown, f"name students of configs/student/: {sorted(known)}")


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
    demo: DemoConfig = field(default_factory=DemoConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    loadtest: LoadtestConfig = field(default_factory=LoadtestConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    # modules or packages besides configs/student/*.yaml's whose students' folders evaluation and serving may
    # load (a student.json never chooses the code that opens it)
    student_packages: list[str] = field(default_factory=list)
    seed: int = 0


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    groups: tuple[tuple[str, type], ...] = (
        ("paths", PathsConfig),
        ("data", DataConfig),
        ("retrieval", RetrievalConfig),
        ("teacher", TeacherConfig),
        ("features", FeaturesConfig),
        ("evaluate", EvaluateConfig),
        ("demo", DemoConfig),
        ("dashboard", DashboardConfig),
        ("serve", ServeConfig),
        ("loadtest", LoadtestConfig),
        ("export", ExportConfig),
    )
    for group, node in groups:
        cs.store(group=group, name=f"{group}_schema", node=node)
    for fmt in DATA_OPTIONS:
        cs.store(group="data", name=f"{fmt}_data_schema", node=data_schema(fmt))
    for name, node in STUDENT_SCHEMAS.items():
        cs.store(group="student", name=name, node=node)


register()


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """configs/config.yaml with `overrides`, composed by Hydra's compose API on the schemas registered above: the
    one way code outside `@hydra.main` (benchmarks, the command line's checks, the demo's student configs) makes
    the project's config. Inside `@hydra.main` Hydra is initialised already and composes in place."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose("config", overrides=list(overrides))
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))
