"""`make evaluate`: every ranker in the workspace on the test split, latency, significance, the cascade, report.

Writes `metrics.json`:

    {"split": "test",
     "rankers": {"<name>": {"ndcg@10", "mrr@10", "recall@100", "map", "kendall_tau_vs_teacher",
                            "ndcg@10_vs_teacher_grades", "ms_per_query", "p_vs_bm25", "p_vs_teacher"}},
     "cascade": {"student", "costs", "best_under_budget", "policies": [...]}}

and `report.md` with PNG plots beside it (`distill.evaluation.report`). Significance: two-sided paired t-test
over per-query nDCG@10 (scipy `ttest_rel`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from scipy.stats import ttest_rel

from distill.data.beir import Dataset
from distill.data.prepare import load_dataset
from distill.evaluation.cascade import Costs, best_under, quality_table, records, sweep
from distill.evaluation.rankers import Ranker, find_rankers
from distill.evaluation.report import table, write_report
from distill.evaluation.schema import EvaluateConfig
from distill.ir.metrics import evaluate, kendall_per_query, per_query, quality
from distill.ir.timing import median_ms, query_groups
from distill.objectives.adapters import teacher_grades
from distill.objectives.groups import Groups
from distill.retrieval.candidates import checked_candidates
from distill.tracking import start_run
from distill.workspace import Workspace, write_json_atomic

log = logging.getLogger(__name__)


def recovered(ndcg: float, bm25: float, teacher: float) -> float | None:
    """The share of the teacher's nDCG@10 gain over BM25 that a ranker recovers (1 = all of it)."""
    return (ndcg - bm25) / (teacher - bm25) if teacher - bm25 > 1e-9 else None


def teacher_qrels(cands: pd.DataFrame, teacher: np.ndarray, n_grades: int = 5) -> pd.DataFrame:
    """Grades 0..n_grades-1 per query from the teacher's scores (quantiles within the query's candidates)."""
    c = cands.assign(t=teacher).sort_values("qid", kind="stable")
    sizes = c.groupby("qid", sort=False).size().to_numpy()
    g = teacher_grades(c.t.to_numpy(), Groups.from_sizes(sizes), n_grades)
    return pd.DataFrame({"qid": c.qid.to_numpy(), "docid": c.docid.to_numpy(), "relevance": g.astype(int)})


def _p(a: pd.Series, b: pd.Series) -> float | None:
    a, b = a.align(b, fill_value=0.0)
    if len(a) < 2 or np.allclose(a, b):
        return None
    return float(ttest_rel(a, b).pvalue)


def _retrieval_ms(cfg: DictConfig, ds, qids: list[str]) -> float:
    from distill.retrieval.candidates import build_index

    index = build_index(ds, cfg.retrieval, Workspace.from_cfg(cfg))
    texts = ds.queries.loc[qids, "text"].tolist()
    times = []
    for t in texts:
        s = time.perf_counter()
        index.search([t], cfg.retrieval.k)
        times.append((time.perf_counter() - s) * 1000.0)
    return float(np.median(times))


def latency_groups(cands: pd.DataFrame, ec: Any, seed: int) -> tuple[np.ndarray, list[pd.DataFrame]]:
    """The queries whose top `latency_candidates` candidates time each ranker (a seeded sample)."""
    return query_groups(cands, ec.latency_queries, ec.latency_candidates, seed)


def ranker_metrics(
    rankers: list[Ranker], cands: pd.DataFrame, qrels: pd.DataFrame, groups: list[pd.DataFrame]
) -> tuple[dict[str, dict[str, Any]], dict[str, pd.Series]]:
    """Quality, fidelity to the teacher, latency and significance of every ranker; and per-query nDCG@10."""
    teacher = next((r for r in rankers if r.name == "teacher"), None)
    tq = teacher_qrels(cands, teacher.scores) if teacher is not None else None
    per_q: dict[str, pd.Series] = {}
    out: dict[str, dict[str, Any]] = {}
    for r in rankers:
        run_df = cands[["qid", "docid"]].assign(score=r.scores)
        m: dict[str, Any] = quality(qrels, run_df)
        per_q[r.name] = per_query(qrels, run_df)["ndcg@10"]
        if teacher is not None and r is not teacher:
            m["kendall_tau_vs_teacher"] = kendall_per_query(cands, r.scores, teacher.scores)
            m["kendall_tau_top10_vs_teacher"] = kendall_per_query(cands, r.scores, teacher.scores, top=10)
            m["ndcg@10_vs_teacher_grades"] = evaluate(tq, run_df)["ndcg@10"]
        m["ms_per_query"] = median_ms(r.probe, groups) if r.probe is not None else None
        out[r.name] = m
    for name, m in out.items():
        if teacher is not None and name != "teacher":
            m["recovered"] = recovered(m["ndcg@10"], out["bm25"]["ndcg@10"], out["teacher"]["ndcg@10"])
        m["p_vs_bm25"] = _p(per_q[name], per_q["bm25"]) if name != "bm25" else None
        m["p_vs_teacher"] = (
            _p(per_q[name], per_q["teacher"]) if teacher is not None and name != "teacher" else None
        )
    return out, per_q


def retriever_metrics(
    rankers: list[Ranker], cands: pd.DataFrame, qrels: pd.DataFrame, k: int
) -> dict[str, dict[str, Any]]:
    """Students that also retrieve, each over the whole corpus (top k), beside BM25's candidates (its top k)."""
    qids = sorted(set(qrels.qid) & set(cands.qid))
    bm25 = cands[cands.qid.isin(qids)]
    out = {"bm25": quality(qrels, bm25[["qid", "docid"]].assign(score=bm25.bm25.to_numpy()))}
    for r in rankers:
        if r.search is not None:
            t = time.perf_counter()
            run, facts = r.search(qids, k)
            ms = (time.perf_counter() - t) * 1000.0 / max(1, len(qids))
            out[r.name] = quality(qrels, run) | facts | {"ms_per_query_batched": ms}
    return out


def cascade_section(
    cfg: DictConfig,
    ec: Any,
    ds: Dataset,
    cands: pd.DataFrame,
    qrels: pd.DataFrame,
    rankers: list[Ranker],
    metrics: dict[str, dict[str, Any]],
    probe_q: np.ndarray,
    groups: list[pd.DataFrame],
) -> tuple[dict[str, Any] | None, pd.DataFrame | None]:
    """The cascade BM25 -> the best (or the configured) student -> the teacher, simulated under the load profile
    with the measured costs; None when there is no teacher, no student or no teacher latency."""
    by_name = {r.name: r for r in rankers}
    teacher = by_name.get("teacher")
    students = [r for r in rankers if r.kind == "student"]
    if teacher is None or not students:
        return None, None
    student = by_name.get(ec.cascade_student) or max(students, key=lambda r: metrics[r.name]["ndcg@10"])
    s_ms = metrics[student.name]["ms_per_query"] or 0.0
    t_ms = metrics["teacher"]["ms_per_query"]
    if t_ms is None:
        log.warning("no teacher latency (teacher model not loadable here): cascade simulation skipped")
        return None, None
    n_c = float(np.mean([len(g) for g in groups]))
    costs = Costs(_retrieval_ms(cfg, ds, list(probe_q)), s_ms / n_c, t_ms / n_c)
    qtab = quality_table(qrels, cands, student.scores, teacher.scores, ec.cascade_n, ec.cascade_k)
    load = ec.load
    tab, _ = sweep(qtab, costs, load, ec.sla_ms)
    section = {
        "student": student.name,
        "costs": asdict(costs),
        "load": asdict(load),
        "p99_budget_ms": ec.p99_budget_ms,
        "best_under_budget": best_under(tab, ec.p99_budget_ms),
        "policies": records(tab),
    }
    return section, tab


def run(cfg: DictConfig) -> dict[str, Any]:
    """Every ranker of the workspace on a split: metrics, the cascade, metrics.json, report.md, tracking."""
    ec: EvaluateConfig = OmegaConf.to_object(cfg.evaluate)  # type: ignore[assignment]
    ws = Workspace.from_cfg(cfg)
    ds = load_dataset(cfg)
    checked_candidates(cfg, ws, ds)
    cands = pd.read_parquet(ws.candidates)
    cands = cands[cands.split == ec.split].reset_index(drop=True)
    qrels = ds.qrels[ec.split]
    rankers = find_rankers(cfg, ds, ws, cands)
    probe_q, groups = latency_groups(cands, ec, cfg.seed)
    metrics, per_q = ranker_metrics(rankers, cands, qrels, groups)
    out: dict[str, Any] = {"split": ec.split, "rankers": metrics}
    if any(r.search is not None for r in rankers):
        out["retrievers"] = retriever_metrics(rankers, cands, qrels, ec.retrieve_k)
    cascade, cascade_tab = cascade_section(cfg, ec, ds, cands, qrels, rankers, metrics, probe_q, groups)
    if cascade is not None:
        out["cascade"] = cascade
    write_json_atomic(out, ws.metrics)
    report = write_report(ws, out, cands, rankers, per_q, cascade_tab)
    with start_run(cfg, stage="evaluate") as tracker:
        tracker.summary(
            {
                f"{ec.split}/{name}/{k}": v
                for name, m in out["rankers"].items()
                for k, v in m.items()
                if isinstance(v, (int, float))
            }
        )
        tracker.artifact(ws.metrics, type="metrics")
        tracker.artifact(ws.plots, type="report", name="report-plots")
        tracker.artifact(report, type="report")
    print(f"{table(out)}\n-> {ws.metrics}, {report}")
    return out


__all__ = ["run", "Ranker"]
