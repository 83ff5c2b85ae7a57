"""Training examples for every neural student, from teacher-scored candidates: one module so that all of them
learn from the same positives, the same denoised hard negatives and the same teacher scores.

An example is a train query, one positive and `negatives` hard negatives, labelled with the teacher's scores
(positive first): the input of sentence-transformers' distillation losses (MarginMSE, Hofstätter et al., 2020;
KL over the softmax of the candidates, e.g. RocketQAv2, Ren et al., 2021) for every model family.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from distill.data.beir import Dataset
from distill.errors import DataError
from distill.ir.split import held_out
from distill.students.coverage import covered_queries
from distill.teacher.soft_labels import read_soft_labels
from distill.workspace import Workspace

log = logging.getLogger(__name__)

# The salt of the stacking hold-out: every student holds out the same queries for a given share.
STACK_SEED = 7919


def stack_holdout(qids: list[str], fraction: float) -> set[str]:
    """The train queries a student with `student.stack_holdout=fraction` never trains on."""
    return (
        {q for q, out in zip(qids, held_out(qids, fraction, STACK_SEED), strict=True) if out}
        if fraction
        else set()
    )


def build_examples(
    soft: pd.DataFrame, qrels: pd.DataFrame, queries: pd.DataFrame, opts: Any, corpus: Any = None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Training examples from teacher-scored candidates: one row per (query, positive, sample).

    Returns (examples with columns qid, pos, negs (list), scores (list: the positive's teacher score, then the
    negatives'), counts of queries skipped by reason). Negatives are drawn (seeded by `opts.seed`) from the
    query's candidates ranked within the top `opts.negative_depth` by the teacher, excluding judged-relevant
    documents and those the teacher scores above `positive score - opts.negative_margin`; a positive with fewer
    than `opts.negatives` such negatives is skipped (counted, never silent). Labels naming a query the dataset
    lacks, or a document outside `corpus` (its ids, when given), are refused: their texts would be empty.
    """
    unknown = sorted(set(soft.qid) - set(queries.index))
    if unknown:
        raise DataError(
            f"soft labels: {len(unknown)} qid(s) not among the dataset's queries (first: {unknown[:3]}); "
            f"were they scored on another dataset? Re-run `make teacher-score` with this data="
        )
    if corpus is not None:
        unknown = sorted(set(soft.docid) - set(corpus))
        if unknown:
            raise DataError(
                f"soft labels: {len(unknown)} docid(s) not in the dataset's corpus (first: {unknown[:3]}): a "
                f"student would learn from empty texts; re-import them with the dataset's own ids (the importer "
                f"checks them), or re-run `make teacher-score` with this data="
            )
    rng = np.random.default_rng(opts.seed)
    rel = qrels[qrels.relevance > 0]
    relevant = {q: set(g.docid) for q, g in rel.groupby("qid")}
    skipped = {"no_positive": 0, "too_few_negatives": 0}
    rows = []
    for qid, g in soft.groupby("qid", sort=True):
        g = g.sort_values("score", ascending=False, kind="stable")
        rel_q = relevant.get(qid, set())
        pos = g[g.docid.isin(rel_q)] if opts.positives == "qrels" else g.head(1)
        if pos.empty:
            skipped["no_positive"] += 1
            continue
        pool = g.head(opts.negative_depth)
        pool = pool[~pool.docid.isin(rel_q | set(pos.docid))]
        for p_doc, p_score in zip(pos.docid, pos.score, strict=True):
            ok = pool if opts.negative_margin is None else pool[pool.score < p_score - opts.negative_margin]
            if len(ok) < opts.negatives:
                skipped["too_few_negatives"] += 1
                continue
            for _ in range(opts.samples_per_positive):
                pick = np.sort(rng.choice(len(ok), size=opts.negatives, replace=False))
                negs = ok.iloc[pick]
                rows.append(
                    {
                        "qid": qid,
                        "pos": p_doc,
                        "negs": list(negs.docid),
                        "scores": [float(p_score), *map(float, negs.score)],
                    }
                )
    return pd.DataFrame(rows, columns=["qid", "pos", "negs", "scores"]), skipped


def label_list(scores: Any, how: str = "raw") -> list[float]:
    """One example's teacher scores as labels: as they are (`raw`) or standardised within the list (`zscore`)."""
    s = np.asarray(scores, np.float64)
    if how == "zscore":
        s = (s - s.mean()) / (s.std() + 1e-6)
    return [float(x) for x in s]


def hf_dataset(ds: Dataset, ex: pd.DataFrame, labels: str = "raw") -> Any:
    """The examples as a `datasets.Dataset` in sentence-transformers' column order: query, positive,
    negative_1..n (texts), label (the teacher's scores, positive first; `labels` as in `label_list`)."""
    from datasets import Dataset as HFDataset

    n_neg = len(ex.negs.iloc[0]) if len(ex) else 0
    cols: dict[str, list] = {
        "query": ds.queries.loc[ex.qid, "text"].tolist(),
        "positive": ds.doc_texts(list(ex.pos)),
    }
    for i in range(n_neg):
        cols[f"negative_{i + 1}"] = ds.doc_texts([n[i] for n in ex.negs])
    cols["label"] = [label_list(s, labels) for s in ex.scores]
    return HFDataset.from_dict(cols)


def examples_for(opts: Any, ws: Workspace, ds: Dataset) -> tuple[pd.DataFrame, dict, set[str]]:
    """The training examples of the workspace's train queries, how many positives were skipped (by reason), and
    the train queries the student was offered (their labels were within its reach, whether or not they gave an
    example): what stacking must treat as seen."""
    cands = pd.read_parquet(ws.require(ws.candidates, "candidates"), columns=["qid", "split"])
    all_train = sorted(set(cands.qid[cands.split == "train"]))
    del cands
    offered = set(all_train) - stack_holdout(all_train, getattr(opts, "stack_holdout", 0.0))
    # the offered queries' labels only, read a row group at a time
    soft = read_soft_labels(ws.require(ws.soft_labels, "teacher-score"), ws.candidates, sorted(offered))
    covered = covered_queries(soft, offered, opts.min_label_coverage)
    ex, skipped = build_examples(
        soft[soft.qid.isin(covered)], ds.judged("train", "train-student"), ds.queries, opts, ds.corpus.index
    )
    if ex.empty:
        raise DataError(
            f"no training example: {skipped} (queries skipped by reason); lower student.negatives or "
            f"student.negative_margin, or raise student.negative_depth"
        )
    if any(skipped.values()):
        log.warning("student examples: skipped %s", skipped)
    return ex, skipped, offered
