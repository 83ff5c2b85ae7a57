"""Stacking: trained students' scores as features of a GBDT student (`features.students=[NAME, ...]`), as production
LambdaMART rankers stack neural scores beside BM25, click and freshness features.

Leak-free by hold-out (Wolpert's stacked generalisation asks for out-of-sample level-0 predictions): a neural
student records the train queries it learned from (`trained_queries.json`), and `student.stack_holdout=F` makes it
leave out a fixed hash-chosen share F of them, the same queries for every student. The stacked GBDT trains and
validates only on train queries that none of its stacked students saw, so the scores it learns to trust are of
the kind it will meet on test queries. (Where the teacher itself was fine-tuned on the train queries, as the
sample world's is, students initialised from it inherit that; an off-the-shelf teacher has no such link.)

For training, each student's scores on every candidate are cached in `student_scores/<name>.parquet` with the
student folder's content identity (a changed folder is scored again). A stacked model scores its students live
(its latency includes theirs) and refuses to load against a student folder other than the one it was trained
with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distill.data.beir import Dataset
from distill.errors import StageNotReadyError
from distill.ir import fingerprint
from distill.students.base import Context, find_scorer, trained_queries
from distill.workspace import Workspace, write_json_atomic, write_parquet_atomic

PREFIX = "student:"
STACK_FILE = "stack.json"


def student_scores(
    ws: Workspace, ds: Dataset, cands: pd.DataFrame, name: str, packages: tuple[str, ...] = ()
) -> tuple[pd.Series, dict]:
    """Student `name`'s score of every candidate row (aligned with `cands`) and its facts (folder, identity,
    trained queries), from the cache while the folder it was computed from is unchanged (the student is then
    not even loaded)."""
    cache, meta = ws.student_scores(name), ws.student_scores(name).with_suffix(".json")
    keys = pd.MultiIndex.from_frame(cands[["qid", "docid"]])
    if cache.is_file() and meta.is_file():
        facts = json.loads(meta.read_text())
        folder = ws.root / facts["folder"]
        if folder.is_dir() and fingerprint.of_folder(folder) == facts["identity"]:
            cached = pd.read_parquet(cache).set_index(["qid", "docid"]).score
            if keys.isin(cached.index).all():
                scores = pd.Series(cached.reindex(keys).to_numpy(), index=cands.index)
                return scores, facts | _trained(folder)
    scorer, model_dir = find_scorer(Context(ds, ws, cands, packages=packages), name, "features.students")
    facts = {"folder": str(model_dir.relative_to(ws.root)), "identity": fingerprint.of_folder(model_dir)}
    scores = pd.Series(np.asarray(scorer.score(cands), np.float64), index=cands.index)
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(cands[["qid", "docid"]].assign(score=scores.to_numpy()), cache)
    write_json_atomic(facts, meta)
    return scores, facts | _trained(model_dir)


def _trained(model_dir: Path) -> dict[str, Any]:
    return {"trained_queries": trained_queries(model_dir)}


def add_student_features(
    ws: Workspace, ds: Dataset, feats: pd.DataFrame, names: list[str], packages: tuple[str, ...] = ()
) -> tuple[pd.DataFrame, dict[str, dict]]:
    """`feats` with a `student:<name>` column per stacked student, and each student's facts."""
    out, facts = feats.copy(), {}
    cands = pd.read_parquet(ws.require(ws.candidates, "candidates"))
    rows = feats[["qid", "docid"]].merge(
        cands.drop(columns="split", errors="ignore"), on=["qid", "docid"], how="left"
    )
    rows["split"] = feats["split"].to_numpy()
    for name in names:
        scores, f = student_scores(ws, ds, rows.set_axis(feats.index), name, packages)
        out[PREFIX + name] = scores.to_numpy(np.float32)
        facts[name] = f
    return out, facts


def seen_queries(facts: dict[str, dict]) -> set[str]:
    """The train queries some stacked student learned from (their rows must not teach the stack); a student that
    does not record its training queries is a one-line error with the fix."""
    seen: set[str] = set()
    for name, f in facts.items():
        if f["trained_queries"] is None:
            raise StageNotReadyError(
                f"features.students: {name} ({f['folder']}) does not record the queries it trained on, so its "
                f"scores on train queries may have seen their labels; retrain it with student.stack_holdout=0.3"
            )
        seen |= f["trained_queries"]
    return seen


def write_stack(folder: Path, facts: dict[str, dict]) -> None:
    write_json_atomic(
        {n: {"folder": f["folder"], "identity": f["identity"]} for n, f in facts.items()}, folder / STACK_FILE
    )


def stacked_features(model_dir: Path, ctx: Context, rows: pd.DataFrame) -> pd.DataFrame:
    """The `student:<name>` columns of a stacked model for `rows`, scored live by the students it was trained
    with (so that its latency includes theirs), after checking they are the same folders."""
    stack = json.loads((model_dir / STACK_FILE).read_text())
    cols = {}
    for name, want in stack.items():
        key = f"stack:{name}"
        if key not in ctx.cache:
            folder = ctx.ws.root / want["folder"]
            if not folder.is_dir() or fingerprint.of_folder(folder) != want["identity"]:
                raise StageNotReadyError(
                    f"{model_dir} was stacked on another version of {name} ({want['folder']}): retrain it "
                    f"(make train-student with features.students) or remove it"
                )
            ctx.cache[key] = find_scorer(ctx, name, f"{model_dir}/{STACK_FILE}")[0]
        cols[PREFIX + name] = np.asarray(ctx.cache[key].score(rows), np.float32)
    return pd.DataFrame(cols, index=rows.index)


__all__ = [
    "PREFIX",
    "add_student_features",
    "stacked_features",
    "seen_queries",
    "write_stack",
]
