"""The one coverage rule every student follows before it learns from soft labels.

A train query is covered when the teacher scored what the student needs of it: for a neural student, at least
one of its documents (its examples are drawn from the scored documents); for a GBDT student, every one of its
candidates (each feature row needs a label). A student trains on covered queries only, says how many it left
out, and refuses to start when fewer than `student.min_label_coverage` of the train queries are covered: labels
for a handful of queries would otherwise train a model with no word of how little it saw.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from distill.errors import DataError

log = logging.getLogger(__name__)


def covered_queries(
    soft: pd.DataFrame,
    cands: pd.DataFrame,
    qids: set[str],
    min_share: float,
    complete: bool,
    scored: np.ndarray | None = None,
) -> set[str]:
    """The queries of `qids` the soft labels cover (`complete`: every candidate pair of the query scored), or a
    one-line `DataError` when they are fewer than `min_share` of `qids`. `scored` (with `complete`): whether each
    row of `cands` has a soft label, when the caller has joined them already."""
    if not qids:
        raise DataError(
            "no train query to learn from: the candidates have no train split (give the dataset qrels/train.tsv "
            "and re-run `make candidates`)"
        )
    if complete and scored is not None:
        mine = cands.qid.isin(qids).to_numpy()
        covered = set(cands.qid[mine]) - set(cands.qid[mine & ~scored])
    elif complete:
        labelled = soft[soft.qid.isin(qids)]
        rows = cands[cands.qid.isin(qids)][["qid", "docid"]]
        hit = rows.merge(
            labelled[["qid", "docid"]].drop_duplicates(), on=["qid", "docid"], how="left", indicator=True
        )
        missing = set(hit.qid[hit["_merge"] == "left_only"])
        covered = set(rows.qid) - missing
    else:
        covered = set(soft.qid[soft.qid.isin(qids)])
    share = len(covered) / len(qids)
    if share < min_share:
        need = "teacher scores for every candidate" if complete else "teacher scores"
        raise DataError(
            f"soft labels cover {len(covered)} of the {len(qids)} train queries ({share:.1%}; a query needs {need}); "
            f"student.min_label_coverage={min_share} asks for more: score the rest (`make teacher-score`) or "
            f"lower student.min_label_coverage"
        )
    if len(covered) < len(qids):
        log.warning(
            "soft labels cover %d of %d train queries (%.1f%%): the student trains on those only",
            len(covered),
            len(qids),
            100 * share,
        )
    return covered


__all__ = ["covered_queries"]
