"""The one coverage rule every student follows before it learns from soft labels.

A train query is covered when the teacher scored what the student needs of it: for a neural student, at least
one of its documents (its examples are drawn from the scored documents); for a GBDT student, every one of its
candidates (each feature row needs a label). A student trains on covered queries only, says how many it left
out, and refuses to start when fewer than `student.min_label_coverage` of the train queries are covered: labels
for a handful of queries would otherwise train a model with no word of how little it saw.
"""

from __future__ import annotations

import logging

import pandas as pd

from distill.errors import DataError

log = logging.getLogger(__name__)


def covered_queries(soft: pd.DataFrame, qids: set[str], min_share: float) -> set[str]:
    """The queries of `qids` with at least one teacher-scored document (a neural student's rule), or a one-line
    `DataError` when they are fewer than `min_share` of `qids`. (The GBDT's rule, every candidate scored, is
    counted by `gbdt_data.training_rows` over integer codes and checked by `check_coverage`.)"""
    if not qids:
        raise DataError(
            "no train query to learn from: the candidates have no train split (give the dataset qrels/train.tsv "
            "and re-run `make candidates`)"
        )
    covered = set(soft.qid[soft.qid.isin(qids)])
    check_coverage(len(covered), len(qids), min_share, complete=False)
    return covered


def check_coverage(covered: int, queries: int, min_share: float, complete: bool) -> None:
    """The rule itself: a one-line `DataError` when `covered` of the `queries` train queries are fewer than
    `min_share`; a warning when some are left out."""
    share = covered / queries
    if share < min_share:
        need = "teacher scores for every candidate" if complete else "teacher scores"
        raise DataError(
            f"soft labels cover {covered} of the {queries} train queries ({share:.1%}; a query needs {need}); "
            f"student.min_label_coverage={min_share} asks for more: score the rest (`make teacher-score`) or "
            f"lower student.min_label_coverage"
        )
    if covered < queries:
        log.warning(
            "soft labels cover %d of %d train queries (%.1f%%): the student trains on those only",
            covered,
            queries,
            100 * share,
        )


__all__ = ["check_coverage", "covered_queries"]
