"""The rankers present in a workspace, each with its scores on a split's candidates and a latency probe.

Latency is the median wall time to score one query's top `n` BM25 candidates, on this machine, with what a
production reranker would have precomputed excluded: GBDT features are read from `features.parquet`, and the
bi-encoder's document embeddings are computed once (it encodes only the query at request time). The teacher
runs through the project's scoring engine with the run's `teacher.*` settings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from distill.data.beir import Dataset
from distill.teacher.soft_labels import read_soft_labels
from distill.workspace import Workspace, check_complete

Probe = Callable[[pd.DataFrame], object]  # scores one query's candidate rows


@dataclass
class Ranker:
    name: str
    kind: str  # retrieval | teacher | student
    scores: np.ndarray  # aligned with the split's candidate rows
    probe: Probe | None = None


def _gbdt_predict(model_dir: Path) -> tuple[list[str], Callable[[np.ndarray], np.ndarray]]:
    names = json.loads((model_dir / "features.json").read_text())
    if (model_dir / "model.txt").exists():
        import lightgbm as lgb

        booster = lgb.Booster(model_file=str(model_dir / "model.txt"))
        return names, lambda X: np.asarray(booster.predict(X, num_threads=1))
    import xgboost as xgb

    xb = xgb.Booster()
    xb.load_model(str(model_dir / "model.json"))
    xb.set_param({"nthread": 1})
    return names, lambda X: xb.inplace_predict(X)


def find_rankers(cfg: DictConfig, ds: Dataset, ws: Workspace, cands: pd.DataFrame) -> list[Ranker]:
    """BM25, the teacher (soft labels), GBDT students and every bi-encoder under models/bi_encoder/."""
    rankers = [Ranker("bm25", "retrieval", cands.bm25.to_numpy(np.float64))]
    if (ws.soft_labels / "manifest.json").exists():
        soft = read_soft_labels(ws.soft_labels, ws.candidates)
        t = cands[["qid", "docid"]].merge(soft[["qid", "docid", "score"]], on=["qid", "docid"], how="left")
        if t.score.isna().any():
            raise_missing(int(t.score.isna().sum()))
        rankers.append(
            Ranker("teacher", "teacher", t.score.to_numpy(np.float64), _teacher_probe(cfg, ds, ws))
        )
    if ws.features.exists():
        feats = pd.read_parquet(ws.features)
        feats = cands[["qid", "docid"]].merge(feats, on=["qid", "docid"], how="left")
        for name in ("lightgbm", "xgboost"):
            d = ws.model(name)
            if d.exists():
                remedy = f'retrain it: make train-student ARGS="student={name}"'
                check_complete(d, remedy)
                ws.check_inputs(d, json.loads((d / "train_info.json").read_text()).get("inputs"), remedy)
                names, predict = _gbdt_predict(d)
                X = feats[names].to_numpy(np.float32)
                rows = pd.Series(
                    np.arange(len(feats)), index=pd.MultiIndex.from_frame(feats[["qid", "docid"]])
                )

                def probe(q: pd.DataFrame, predict=predict, X=X, rows=rows) -> object:
                    return predict(X[rows.loc[list(zip(q.qid, q.docid, strict=True))].to_numpy()])

                rankers.append(Ranker(name, "student", predict(X).astype(np.float64), probe))
    root = ws.model("bi_encoder")
    for d in (
        sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if root.exists()
        else []
    ):
        remedy = f'retrain it: make train-student ARGS="student=bi_encoder student.loss={d.name}"'
        check_complete(d, remedy)
        ws.check_inputs(d, json.loads((d / "distill_train.json").read_text()).get("inputs"), remedy)
        rankers.extend(_bi_encoder(d, ds, cands))
    return rankers


def raise_missing(n: int) -> None:
    from distill.errors import StageNotReadyError

    raise StageNotReadyError(
        f"{n} candidates have no teacher score: the soft labels are older than candidates.parquet; "
        f"re-run `make teacher-score ARGS=teacher.overwrite=true`"
    )


def _bi_encoder(model_dir: Path, ds: Dataset, cands: pd.DataFrame) -> list[Ranker]:
    """The bi-encoder, and its hybrid with BM25 (student + w * bm25) when training chose a weight."""
    from sentence_transformers import SentenceTransformer

    from distill.students.bi_encoder import HYBRID_FILE, embed_candidates, encode

    info = json.loads((model_dir / "distill_train.json").read_text())
    model = SentenceTransformer(str(model_dir), device="cpu")
    d, dids, scores = embed_candidates(model, ds, cands, info.get("similarity", "dot"))
    doc_row = pd.Series(np.arange(len(dids)), index=dids)
    qtext = ds.queries["text"]

    def probe(rows: pd.DataFrame) -> object:
        qe = encode(model, [qtext[rows.qid.iloc[0]]], info.get("similarity") == "cos")
        return d[doc_row.loc[rows.docid].to_numpy()] @ qe[0]

    name = f"bi_encoder_{model_dir.name}"
    out = [Ranker(name, "student", scores.astype(np.float64), probe)]
    if (model_dir / HYBRID_FILE).exists():
        w = float(json.loads((model_dir / HYBRID_FILE).read_text())["bm25_weight"])

        def hybrid_probe(rows: pd.DataFrame) -> object:
            return np.asarray(probe(rows)) + w * rows.bm25.to_numpy(np.float64)

        hybrid = scores.astype(np.float64) + w * cands.bm25.to_numpy(np.float64)
        out.append(Ranker(f"{name}+bm25", "student", hybrid, hybrid_probe))
    return out


def _teacher_probe(cfg: DictConfig, ds: Dataset, ws: Workspace) -> Probe | None:
    from distill.teacher.engine import ScoringEngine
    from distill.teacher.scoring import load_configured_teacher, resolve_teacher

    try:
        ce = load_configured_teacher(cfg, resolve_teacher(cfg.teacher.model, ws), cfg.teacher.device)
    except Exception as e:  # the soft labels may come from a teacher that is not available here
        import logging

        logging.getLogger(__name__).warning("teacher latency not measured: %s", e)
        return None
    engine = ScoringEngine(ce, batch_tokens=cfg.teacher.batch_tokens)
    qtext = ds.queries["text"]

    def probe(rows: pd.DataFrame) -> object:
        return engine.score([qtext[rows.qid.iloc[0]]] * len(rows), ds.doc_texts(list(rows.docid)))

    return probe


def median_ms(probe: Probe, groups: list[pd.DataFrame], warmup: int = 2) -> float:
    """Median milliseconds of `probe` over the query groups (after `warmup` untimed calls)."""
    for g in groups[:warmup]:
        probe(g)
    times = []
    for g in groups:
        t = time.perf_counter()
        probe(g)
        times.append((time.perf_counter() - t) * 1000.0)
    return float(np.median(times))
