"""Shared fixtures: config composition, tiny datasets in tmp dirs, the real collections in ../shared/data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import distill.schema  # noqa: F401  (registers the config schemas)
from distill.config import CONFIG_DIR, PROJECT_ROOT

SHARED = Path(os.environ.get("DISTILL_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; missing -> skip on a user's clone, fail on CI (CI=true)."""
    if not SHARED.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the shared data folder {SHARED} is missing")
        pytest.skip(f"the shared data folder {SHARED} is not beside this checkout")
    return SHARED


def compose_under(root: Path, *overrides: str):
    """The project config with overrides; outputs and generated data go under `root`."""
    base = [
        f"paths.output_root={root / 'outputs'}",
        f"paths.data_root={root / 'data'}",
        "logger=none",
        # the students the tests define in their own modules (student.json loaders are trusted only from
        # configs/student/*.yaml's modules and these packages)
        "student_packages=[tests]",
        # fp32 whatever the CPU: tests compare scores with fp32 references (`auto` is tested on its own)
        "teacher.dtype=fp32",
    ]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=base + list(overrides))


@pytest.fixture
def make_cfg(tmp_path):
    """Compose the project config with overrides; outputs and generated data go under tmp_path."""
    return lambda *overrides: compose_under(tmp_path, *overrides)


TINY_SAMPLE = [
    "data.options.n_docs=500",
    "data.options.n_train=40",
    "data.options.n_test=20",
    "data.options.n_topics=12",
    "data.options.sessions_per_query=4",
]


@pytest.fixture
def tiny_sample_cfg(make_cfg, tmp_path):
    """A small sample world (generated in about a second)."""
    return lambda *o: make_cfg(f"data.path={tmp_path / 'sample'}", *TINY_SAMPLE, *o)


def spy_loaded_corpus_columns(monkeypatch, module) -> list[set]:
    """The corpus columns of each dataset `module` loads through its `load_dataset`, as loaded."""
    from distill.data.prepare import load_dataset

    loaded: list[set] = []

    def spy(cfg, **kwargs):
        ds = load_dataset(cfg, **kwargs)
        loaded.append(set(ds.corpus.columns))
        return ds

    monkeypatch.setattr(module, "load_dataset", spy)
    return loaded


def write_jsonl(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


@pytest.fixture
def tiny_beir(tmp_path):
    """A valid 4-document BEIR folder; tests corrupt copies of it."""

    def _make(corpus=None, queries=None, qrels=None, name="tiny") -> Path:
        root = tmp_path / name
        write_jsonl(
            root / "corpus.jsonl",
            corpus
            if corpus is not None
            else [
                {
                    "_id": "d1",
                    "title": "Cats",
                    "text": "the cat sat on the mat",
                    "timestamp": "2024-01-02T00:00:00Z",
                },
                {"_id": "d2", "title": "Dogs", "text": "dogs chase cats in the park"},
                {"_id": "d3", "title": "", "text": "stock markets fell sharply today"},
                {"_id": "d4", "title": "Fish", "text": "salmon swim upstream to spawn"},
            ],
        )
        write_jsonl(
            root / "queries.jsonl",
            queries
            if queries is not None
            else [
                {"_id": "q1", "text": "cat on a mat"},
                {"_id": "q2", "text": "markets"},
            ],
        )
        (root / "qrels").mkdir(exist_ok=True)
        (root / "qrels" / "test.tsv").write_text(
            qrels if qrels is not None else "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t1\nq2\td3\t1\n"
        )
        return root

    return _make


TINY_TEXTS = [
    "the cat sat on the mat",
    "dogs chase cats in the park",
    "stock markets fell sharply today",
    "salmon swim upstream to spawn",
    "cat on a mat",
    "markets",
    "a quick brown fox jumps",
] * 5


def _tiny_scratch_model(dest, seed: int, num_labels: int = 1):
    """A tiny BERT cross-encoder from scratch (one layer, two heads: the exact-match start) over TINY_TEXTS."""
    from distill.teacher.train import TeacherTrainConfig, build_scratch_model

    tc = TeacherTrainConfig(
        vocab_size=200,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        init="match",
        intermediate_size=64,
        max_length=64,
        seed=seed,
    )
    return build_scratch_model(TINY_TEXTS, tc, dest, num_labels=num_labels)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny one-logit BERT cross-encoder (tokenizer built from a few sentences), saved with save_pretrained."""
    return _tiny_scratch_model(tmp_path_factory.mktemp("tiny_ce"), seed=0)


@pytest.fixture(scope="session")
def tiny_two_label_dir(tmp_path_factory):
    return _tiny_scratch_model(tmp_path_factory.mktemp("tiny_ce2"), seed=1, num_labels=2)


@pytest.fixture
def gbdt_ws(tiny_sample_cfg, tiny_model_dir):
    """A tiny sample workspace with candidates and soft labels of the tiny teacher; returns a cfg factory."""
    from distill.retrieval.candidates import run as run_candidates
    from distill.teacher.scoring import run as run_score

    def cfg(*o):
        # small-data settings of the GBDT students (the default student); LightGBM's own min_data_in_leaf is not
        # XGBoost's (its schema refuses it), and neural students take neither
        chosen = next((x.split("=", 1)[1] for x in o if x.startswith("student=")), "lightgbm")
        gbdt = (
            ["student.num_trees=20", "student.early_stopping=5"] if chosen in ("lightgbm", "xgboost") else []
        )
        return tiny_sample_cfg(
            "retrieval.k=15",
            f"teacher.model={tiny_model_dir}",
            "teacher.max_length=64",
            "teacher.batch_tokens=2048",
            *gbdt,
            *(["student.min_data_in_leaf=5"] if chosen == "lightgbm" else []),
            *o,
        )

    run_candidates(cfg())
    run_score(cfg())
    return cfg
