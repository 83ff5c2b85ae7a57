"""`make train-student student=lightgbm|xgboost`: a GBDT ranker on features.parquet, learnt from soft labels.

`student.objective`:
- `regression`: pointwise squared error on the (blended) teacher scores;
- `lambdarank`: teacher scores turned into integer grades per query (`grades`, `grade_method`), then
  LightGBM's lambdarank / XGBoost's rank:ndcg with gains 2^grade - 1;
- `listnet_kd`, `ranknet_kd`, `margin_mse`, `listmle_kd`: the distillation objectives of `distill.objectives`
  (one implementation for both libraries), with `temperature` for the softmax / pairwise ones;
- `module.Class`: your own objective class (`loss`, `grad_hess`; a `distill.objectives.GroupObjective`
  subclass runs on size buckets), given `temperature` if its constructor takes it.

`labels.alpha` blends the per-query z-scored teacher score with the z-scored human grade (qrels; 0 when
unjudged): target = alpha * teacher + (1 - alpha) * human. Training queries are split group-wise into train and
validation (`val_fraction`); early stopping watches validation nDCG@10 against teacher-derived grades.
The model folder holds the native model file, the feature list, the config, validation metrics and feature
importances.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from distill.config import typed
from distill.data.prepare import load_dataset
from distill.errors import ConfigError, DataError, StageNotReadyError
from distill.features.build import run as build_features_stage
from distill.features.build import stale_features
from distill.objectives import Groups, build_objective
from distill.objectives.adapters import lightgbm_objective, teacher_grades, xgboost_objective
from distill.retrieval.candidates import checked_candidates
from distill.students.base import Context, FunctionScorer, Scorer, student_meta, write_student_json
from distill.students.gbdt_data import (
    ID_COLUMNS,
    FeatureMatrix,
    RowSource,
    lightgbm_rows,
    training_rows,
    xgboost_batches,
)
from distill.students.gbdt_params import xgboost_params
from distill.students.schema import GBDTConfig, LightGBMConfig, XGBoostConfig
from distill.students.stacking import (
    PREFIX,
    add_student_features,
    seen_queries,
    stacked_features,
    write_stack,
)
from distill.teacher.soft_labels import iter_soft_labels
from distill.tracking import start_run
from distill.workspace import Workspace, exclusive, staged_dir, write_json_atomic

log = logging.getLogger(__name__)


def _fit_lightgbm(sc: LightGBMConfig, f: Frames, obj: Any) -> Any:
    """LightGBM from `lightgbm.Sequence`s of the rows: bins from a sample, then the rows pushed a batch at a time
    (`features.chunk_rows`)."""
    import lightgbm as lgb

    params: dict[str, Any] = sc.library_params() | {
        "learning_rate": sc.learning_rate,
        "num_threads": sc.threads,
        "seed": sc.seed,
        "data_random_seed": sc.seed,  # the rows binned come from this seed, whichever way the rows are given
        "deterministic": True,
        "verbose": -1,
        "metric": "ndcg",
        "eval_at": [10],
    }
    params["label_gain"] = [2**i - 1 for i in range(sc.grades)]
    params["objective"] = (
        "lambdarank" if sc.objective == "lambdarank" else lightgbm_objective(obj, targets=f.y)
    )
    dtrain = lgb.Dataset([lightgbm_rows(f.X, f.batch_rows)], f.grades, group=f.sizes, free_raw_data=False)
    valid: list[Any] = []
    callbacks: list[Any] = []
    if len(f.sizes_v):
        valid = [lgb.Dataset([lightgbm_rows(f.Xv, f.batch_rows)], f.yv, group=f.sizes_v, reference=dtrain)]
        callbacks = [lgb.early_stopping(sc.early_stopping, verbose=False)]
    return lgb.train(params, dtrain, num_boost_round=sc.num_trees, valid_sets=valid, callbacks=callbacks)


def _fit_xgboost(sc: XGBoostConfig, f: Frames, obj: Any) -> Any:
    """XGBoost from `xgboost.DataIter`s of the rows into `QuantileDMatrix`es, a batch of whole queries at a time
    (`features.chunk_rows`)."""
    import xgboost as xgb

    params = xgboost_params(sc, sc.threads) | {"eval_metric": "ndcg@10"}
    custom = None if sc.objective == "lambdarank" else xgboost_objective(obj, targets=f.y)
    dtrain = xgb.QuantileDMatrix(xgboost_batches(f.X, f.grades, f.sizes, f.batch_rows), nthread=sc.threads)
    evals = []
    if len(f.sizes_v):
        batches = xgboost_batches(f.Xv, f.yv, f.sizes_v, f.batch_rows)
        evals = [(xgb.QuantileDMatrix(batches, ref=dtrain, nthread=sc.threads), "val")]
    return xgb.train(
        params,
        dtrain,
        num_boost_round=sc.num_trees,
        evals=evals,
        obj=custom,
        early_stopping_rounds=sc.early_stopping if evals else None,
        verbose_eval=False,
    )


def student_config(node: Any) -> GBDTConfig:
    """The composed `student` node as its library's typed config (student=lightgbm or student=xgboost)."""
    kind = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    if kind not in (LightGBMConfig, XGBoostConfig):
        if kind not in (None, dict):
            raise ConfigError(
                f"student: {kind.__name__} is not a GBDT student's config; use student=lightgbm or student=xgboost"
            )
        kind = XGBoostConfig if str(node.get("name")) == "xgboost" else LightGBMConfig
    sc: GBDTConfig = typed(node, kind, "student")
    return sc


def load_features(cfg: DictConfig, ws: Workspace) -> pd.DataFrame:
    """features.parquet whole (rebuilt first when missing or stale): what stacking scores its students on."""
    return pd.read_parquet(fresh_features(cfg, ws))


def fresh_features(cfg: DictConfig, ws: Workspace) -> Path:
    """features.parquet, rebuilt first when it is missing or stale."""
    changed = stale_features(cfg, ws)
    if changed:
        log.info("features.parquet is missing or stale (changed: %s): rebuilding it", ", ".join(changed))
        build_features_stage(cfg)
    return ws.features


@dataclass
class Frames:
    """The training rows split by query into train and validation, as the libraries take them: the features as
    `FeatureMatrix`es read a row group at a time, the labels as arrays."""

    names: list[str]  # feature columns
    X: FeatureMatrix
    y: np.ndarray  # blended targets (teacher scores, optionally with qrels)
    grades: (
        np.ndarray
    )  # integer teacher grades per query (ranking metrics and lambdarank need integer labels)
    sizes: np.ndarray
    Xv: FeatureMatrix
    yv: np.ndarray  # validation grades
    sizes_v: np.ndarray
    rows: int
    stack: dict[str, dict] | None = None  # the stacked students' facts (features.students)
    name: str = "lightgbm"
    batch_rows: int = 200_000  # rows handed to the library at a time

    @property
    def model_name(self) -> str:
        """The folder and ranker name: `<library>_stack` when stacked on students."""
        return self.name + "_stack" if self.stack else self.name


def build_frames(cfg: DictConfig, sc: GBDTConfig, ws: Workspace) -> Frames:
    """The training rows as the libraries take them (`gbdt_data`). Memory: per training row its position, target
    and grade, and the libraries' binned features; the feature rows and soft labels are read a row group at a
    time. Stacked students' scores are computed for every row in memory (evaluation scores the other splits from
    that cache), and the dataset is loaded only when the qrels (labels.alpha < 1) or stacked students need it."""
    stacked = list(cfg.features.get("students") or [])
    ds = load_dataset(cfg) if stacked or sc.labels.alpha < 1 else None
    if ds is not None:  # else the features' record vouches for the candidates (`fresh_features`)
        checked_candidates(cfg, ws, ds)
    qrels = pd.DataFrame(columns=["qid", "docid", "relevance"])
    if ds is not None:
        qrels = ds.qrels.get("train", qrels)
    stack, seen = None, set()
    if stacked:
        assert ds is not None
        feats, stack = add_student_features(
            ws, ds, load_features(cfg, ws), stacked, tuple(cfg.get("student_packages") or ())
        )
        seen = seen_queries(stack)
        source = RowSource(feats)
    else:
        source = RowSource(fresh_features(cfg, ws))
    names = [c for c in source.columns if c not in ID_COLUMNS]
    labels = ws.require(ws.soft_labels, "teacher-score")
    tr = training_rows(
        source,
        iter_soft_labels(labels, ws.candidates, columns=["score"]),
        qrels,
        sc.labels.alpha,
        sc.min_label_coverage,
        sc.val_fraction,
        sc.seed,
        seen,
        labels,
    )
    groups, groups_v = Groups.from_sizes(tr.sizes), Groups.from_sizes(tr.sizes_val)
    yv = teacher_grades(tr.score_val, groups_v, sc.grades, sc.grade_method) if len(tr.val) else np.zeros(0)
    return Frames(
        names,
        FeatureMatrix(source, names, tr.train),
        tr.target,
        teacher_grades(tr.target, groups, sc.grades, sc.grade_method),
        tr.sizes,
        FeatureMatrix(source, names, tr.val),
        yv,
        tr.sizes_val,
        tr.rows,
        stack,
        sc.name,
        int(cfg.features.chunk_rows),
    )


def fit(sc: GBDTConfig, f: Frames) -> Any:
    """LightGBM or XGBoost, in this process or on Dask, with the configured objective."""
    obj = None if sc.objective == "lambdarank" else build_objective(sc.objective, temperature=sc.temperature)
    fit_fn: Any
    if sc.dask.cluster:  # Dask partitions arrays: the rows are taken whole
        from distill.students.gbdt_dask import fit_lightgbm_dask, fit_xgboost_dask

        fit_fn = fit_lightgbm_dask if sc.LIBRARY == "lightgbm" else fit_xgboost_dask
        return fit_fn(sc, f.X.to_numpy(), f.y, f.grades, f.sizes, f.Xv.to_numpy(), f.yv, f.sizes_v, obj)
    fit_fn = _fit_lightgbm if sc.LIBRARY == "lightgbm" else _fit_xgboost
    return fit_fn(sc, f, obj)


def save(cfg: DictConfig, sc: GBDTConfig, ws: Workspace, model: Any, f: Frames, t0: float) -> dict[str, Any]:
    """The model folder, written whole (a crash leaves the previous one as it was)."""
    name = f.model_name
    with staged_dir(ws.model(name)) as tmp:
        if f.stack:
            write_stack(tmp, f.stack)
        if sc.LIBRARY == "lightgbm":
            model.save_model(str(tmp / "model.txt"))
            importance = dict(zip(f.names, model.feature_importance("gain").tolist(), strict=True))
            best = int(model.best_iteration or model.current_iteration())
        else:
            model.save_model(str(tmp / "model.json"))
            raw = model.get_score(importance_type="gain")
            importance = {n: float(raw.get(f"f{i}", 0.0)) for i, n in enumerate(f.names)}
            best = int(getattr(model, "best_iteration", model.num_boosted_rounds() - 1)) + 1
        (tmp / "features.json").write_text(json.dumps(f.names))
        pd.Series(importance).sort_values(ascending=False).rename("gain").to_csv(
            tmp / "importance.csv", index_label="feature"
        )
        info = {
            "student": name,
            "objective": sc.objective,
            "stacked": sorted(f.stack or {}),
            "trees": best,
            "train_queries": len(f.sizes),
            "val_queries": len(f.sizes_v),
            "rows": f.rows,
            "features": len(f.names),
            "dask": sc.dask.cluster,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        write_json_atomic(info, tmp / "train_info.json")
        write_student_json(tmp, name=name, ws=ws, config=cfg.student, features=True)
    return info


def train_gbdt(cfg: DictConfig) -> dict[str, Any]:
    """Build the frames, fit, save."""
    sc = student_config(cfg.student)
    ws = Workspace.from_cfg(cfg)
    t0 = time.perf_counter()
    name = sc.name + "_stack" if cfg.features.get("students") else sc.name
    with exclusive(ws.model(name), f"training {name}"):
        frames = build_frames(cfg, sc, ws)
        return save(cfg, sc, ws, fit(sc, frames), frames, t0)


def run(cfg: DictConfig) -> dict[str, Any]:
    with start_run(cfg, stage=f"train-student-{cfg.student.name}") as tracker:
        info = train_gbdt(cfg)
        tracker.summary({f"train/{k}": v for k, v in info.items() if isinstance(v, (int, float))})
        tracker.artifact(Workspace.from_cfg(cfg).model(info["student"]), type="model")
    print(
        f"train-student {info['student']} ({info['objective']}): {info['trees']} trees on "
        f"{info['train_queries']} queries, {info['features']} features in {info['seconds']}s"
    )
    return info


def feature_names(model_dir: Path) -> list[str]:
    """The model's input features, in their column order."""
    return list(json.loads((model_dir / "features.json").read_text()))


def open_model(model_dir: Path) -> Any:
    """The saved booster (lightgbm.Booster or xgboost.Booster; what `make export` exports)."""
    if (model_dir / "model.txt").exists():
        import lightgbm as lgb

        return lgb.Booster(model_file=str(model_dir / "model.txt"))
    import xgboost as xgb

    xb = xgb.Booster()
    xb.load_model(str(model_dir / "model.json"))
    xb.set_param({"nthread": 1})
    return xb


def _predictor(model_dir: Path) -> tuple[list[str], Any]:
    booster = open_model(model_dir)
    if hasattr(booster, "inplace_predict"):
        return feature_names(model_dir), lambda X: booster.inplace_predict(X)
    return feature_names(model_dir), lambda X: np.asarray(booster.predict(X, num_threads=1))


def load(model_dir: Path, ctx: Context) -> list[Scorer]:
    """The GBDT student as a scorer of candidate rows: their features come from features.parquet (precomputed, as
    a production ranker has them), which must be the one it was trained on (`load_scorers` compared its
    fingerprint) and hold every feature it names. A row features.parquet does not hold is refused, never scored
    on missing values."""
    names, predict = _predictor(model_dir)
    predict = ctx.model(model_dir, predict)
    feats = ctx.cache.get("features")
    if feats is None:
        feats = pd.read_parquet(ctx.ws.require(ctx.ws.features, "features")).set_index(["qid", "docid"])
        ctx.cache["features"] = feats
    own = [n for n in names if not n.startswith(PREFIX)]
    lacking = sorted(set(own) - set(feats.columns))
    if lacking:
        raise StageNotReadyError(
            f"{model_dir} was trained on features {own}, but {ctx.ws.features} lacks {lacking}: rebuild the "
            f"features with the options it was trained with, or retrain it (make train-student)"
        )

    def score(rows: pd.DataFrame) -> np.ndarray:
        keys = pd.MultiIndex.from_arrays([rows.qid.to_numpy(), rows.docid.to_numpy()])
        known = keys.isin(feats.index)
        if not known.all():
            i = int(np.flatnonzero(~known)[0])
            raise DataError(
                f"{int((~known).sum())} row(s) have no features in {ctx.ws.features} (first: qid "
                f"{keys[i][0]!r}, docid {keys[i][1]!r}): the GBDT student scores only the candidates features were "
                f"built for (retrieval.k deep; serve.n must not exceed it)"
            )
        X = feats.reindex(keys)[own].set_axis(rows.index)
        if len(own) < len(names):
            X = pd.concat([X, stacked_features(model_dir, ctx, rows)], axis=1)
        return predict(X[names].to_numpy(np.float32))

    return [FunctionScorer(student_meta(model_dir)["name"], score, live=False)]
