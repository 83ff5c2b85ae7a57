"""The student contract: how a student is trained, saved, found and scored.

A student is one module with two entry points, named in its config and its model folder:

- `train(cfg) -> info`: trains on the workspace's soft labels and writes `models/<name>/` whole
  (`workspace.staged_dir`), including `student.json` (`write_student_json`);
- `load(model_dir, ctx) -> list[Scorer]`: what evaluation, the cascade and a server score with. A folder may give
  several scorers (the bi-encoder also gives its hybrid with BM25); a scorer with a `search` function is also
  evaluated as a retriever over the whole corpus.

`configs/student/<name>.yaml` selects the module with `_target_: distill.students.<module>.train`; `make
train-student ARGS="student=<name>"` calls it, and `make evaluate` finds every `models/**/student.json` and calls
the `loader` it names. Neither names a student, so a new student is one module plus one YAML.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from distill.config import CONFIG_DIR, load_callable, to_container
from distill.data.beir import Dataset
from distill.errors import ConfigError, DataError, StageNotReadyError
from distill.ir import fingerprint
from distill.workspace import COMPLETE, Workspace, check_complete, write_json_atomic

STUDENT_FILE = "student.json"
# The train queries a student learned from (a JSON list): what stacking needs to stay leak-free
TRAINED_QUERIES = "trained_queries.json"


@dataclass
class Context:
    """What a scorer may read: the dataset, the workspace, and the candidate rows it will be asked about; which
    modules may load student folders (`trusted`: the registered students' and `student_packages`); and
    `adapters`: per student folder, what its loader's model passes through before scoring (`model`). By default
    none; an export (distill/export) swaps a sentence-transformers model's forward for its graph's, or a GBDT's
    predict function over the feature matrix for its graph's, so the student's own tokenising and scoring code
    serves the export. Keyed by folder, so the students a stacked one reads stay their own."""

    ds: Dataset
    ws: Workspace
    cands: pd.DataFrame  # qid, docid, rank, bm25, split
    cache: dict[str, Any] = field(default_factory=dict)
    packages: tuple[str, ...] = ()
    adapters: dict[Path, Callable[[Any], Any]] = field(default_factory=dict)

    def adapted(self, model_dir: Path) -> bool:
        return model_dir.resolve() in self.adapters

    def model(self, model_dir: Path, model: Any) -> Any:
        """The model a loader scores `model_dir` with: its adapter's stand-in, or the model itself."""
        adapter = self.adapters.get(model_dir.resolve())
        return model if adapter is None else adapter(model)

    @classmethod
    def of(cls, cfg: Any, ds: Dataset, ws: Workspace, cands: pd.DataFrame) -> Context:
        return cls(ds, ws, cands, packages=tuple(cfg.get("student_packages") or ()))

    def trusts(self, module: str) -> bool:
        return module in registered_modules() or any(
            module == p or module.startswith(p + ".") for p in self.packages
        )


@functools.lru_cache(maxsize=1)
def registered_modules() -> frozenset[str]:
    """The modules of the students configs/student/*.yaml register (the `_target_` each states): the only ones,
    with `student_packages`, whose `load` may open a student folder. A folder's student.json cannot name another."""
    from omegaconf import DictConfig, OmegaConf

    out: set[str] = set()
    for path in sorted((CONFIG_DIR / "student").glob("*.yaml")):
        node = OmegaConf.load(path)
        target = str(node.get("_target_") or "") if isinstance(node, DictConfig) else ""
        if target:
            out.add(target.replace(":", ".").rpartition(".")[0])
    return frozenset(out)


class Scorer(Protocol):
    name: str

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        """Scores of candidate rows (qid, docid, bm25; one query or many), aligned with `rows`. Rows may carry
        the query text in a `query` column (a live query the dataset does not hold, as the server sends)."""
        ...


def query_texts(ds: Dataset, rows: pd.DataFrame, qids: np.ndarray) -> list[str]:
    """The text of each of `qids`: from the rows' `query` column when they carry one, else the dataset's."""
    if "query" in rows.columns:
        return rows.groupby("qid", sort=False)["query"].first().loc[qids].tolist()
    return ds.queries.loc[qids, "text"].tolist()


# (qids, k) -> (run: qid, docid, score with the top k documents of the whole corpus per query, index facts such
# as index_bytes_per_doc)
Search = Callable[[list[str], int], tuple[pd.DataFrame, dict[str, float]]]


@dataclass
class FunctionScorer:
    """A scorer from a function; with `search`, the student also retrieves from the whole corpus (evaluation
    then reports it as a retriever too)."""

    name: str
    fn: Callable[[pd.DataFrame], np.ndarray]
    search: Search | None = None
    # False: it scores only the dataset's own queries (e.g. from precomputed features), not live query texts
    live: bool = True

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.fn(rows), dtype=np.float64)


def write_student_json(
    folder: Path, *, name: str, ws: Workspace, config: Any, loader: str | None = None, features: bool = False
) -> None:
    """The model folder's identity: its ranker name, the `module:load` that loads it (by default the module of
    the config's `_target_`), the resolved config it was trained with (its loader reads that, and only that)
    and the content fingerprints of the inputs it learned from (`features`: features.parquet too)."""
    plain = to_container(config)
    if loader is None:
        loader = str(plain["_target_"]).replace(":", ".").rpartition(".")[0] + ":load"
    write_json_atomic(
        {
            "name": name,
            "loader": loader,
            "config": plain,
            "inputs": fingerprint.record(inputs=ws.learned_from(features))["inputs"],
        },
        folder / STUDENT_FILE,
    )


def student_meta(model_dir: Path) -> dict[str, Any]:
    """A student folder's student.json, checked for the keys every reader needs."""
    f = model_dir / STUDENT_FILE
    try:
        meta = json.loads(f.read_text())
        assert isinstance(meta, dict) and {"name", "loader", "config"} <= set(meta)
    except (OSError, ValueError, AssertionError) as e:
        raise DataError(
            f"{f} is damaged or not a student's: retrain it (make train-student) or remove {model_dir}"
        ) from e
    return meta


def trained_config(model_dir: Path, schema: type) -> Any:
    """The typed config a student folder was trained with (its student.json), through the schema's checks."""
    from distill.config import from_plain

    return from_plain(schema, student_meta(model_dir)["config"], f"{model_dir / STUDENT_FILE}: config")


def write_trained_queries(folder: Path, qids: Any) -> None:
    write_json_atomic(sorted({str(q) for q in qids}), folder / TRAINED_QUERIES)


def trained_queries(model_dir: Path) -> set[str] | None:
    """The queries the student in `model_dir` learned from; None when it does not say."""
    path = model_dir / TRAINED_QUERIES
    return set(json.loads(path.read_text())) if path.is_file() else None


def student_dirs(ws: Workspace) -> list[Path]:
    """Every finished (or damaged) student folder of the workspace: those holding a student.json."""
    found = [p.parent for p in sorted(ws.root.glob(f"models/**/{STUDENT_FILE}"))]
    return [d for d in found if not any(part.startswith(".") for part in d.relative_to(ws.root).parts)]


def load_scorers(model_dir: Path, ctx: Context) -> list[Scorer]:
    """The scorers of a student folder, after checking it is whole, learned from the workspace's inputs, and
    names a registered student's `load` (a file alone never chooses what code runs)."""
    module = student_module(model_dir, ctx)
    return load_callable(f"{module}:load", f"{model_dir / STUDENT_FILE}")(model_dir, ctx)


def student_module(model_dir: Path, ctx: Context) -> str:
    """The module of a student folder's loader, after checking the folder is whole, learned from the
    workspace's inputs, and names a registered student's `load` (a file alone never chooses what code runs)."""
    remedy = f"retrain it (make train-student), or remove {model_dir}"
    check_complete(model_dir, remedy)
    meta = student_meta(model_dir)
    module, _, function = str(meta["loader"]).partition(":")
    if function != "load" or not ctx.trusts(module):
        raise ConfigError(
            f"{model_dir / STUDENT_FILE}: loader {meta['loader']!r} is not the load function of a registered "
            f"student (configs/student/*.yaml) or of a package in student_packages; it is not run. Retrain the "
            f"folder, or add its module to student_packages if you trust it"
        )
    ctx.ws.check_inputs(model_dir, meta.get("inputs"), remedy)
    return module


def find_scorer(ctx: Context, name: str, what: str) -> tuple[Scorer, Path]:
    """The scorer called `name` (a ranker name of `make evaluate`'s table) and its folder, loading only the
    folders whose student name it starts with; `what` names the setting in the error."""
    dirs = student_dirs(ctx.ws)
    if not dirs:
        raise StageNotReadyError(
            f'{ctx.ws.root} has no trained student: run `make train-student ARGS="student=NAME"` first'
        )
    names: list[str] = []
    for d in dirs:
        folder_name = str(student_meta(d)["name"])
        if not name.startswith(folder_name):
            names.append(folder_name)
            continue
        for scorer in load_scorers(d, ctx):
            if scorer.name == name:
                return scorer, d
            names.append(scorer.name)
    raise ConfigError(
        f"{what}={name!r}: no such student in {ctx.ws.root}/models; trained: {sorted(set(names))}"
    )


__all__ = [
    "COMPLETE",
    "Context",
    "FunctionScorer",
    "registered_modules",
    "student_meta",
    "trained_config",
    "TRAINED_QUERIES",
    "find_scorer",
    "trained_queries",
    "write_trained_queries",
    "Scorer",
    "load_scorers",
    "student_module",
    "query_texts",
    "student_dirs",
    "write_student_json",
]
