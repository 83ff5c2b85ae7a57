"""`report.md` in the workspace: the metrics and cascade tables and three PNG plots under `plots/`.

- `pareto.png`: quality (nDCG@10) against p99 and p50 latency for every cascade policy, the Pareto front drawn;
- `teacher_vs_student.png`: teacher score against each student's score over the test candidates;
- `gain_hist.png`: per-query nDCG@10 gain over BM25 of the teacher and each student.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distill.evaluation.cascade import pareto
from distill.workspace import Workspace, atomic_path, write_text_atomic


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pareto(tab: pd.DataFrame, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, lat in zip(axes, ["p99_ms", "p50_ms"], strict=True):
        for (policy, n), g in tab.groupby(["policy", "n"]):
            ax.scatter(
                g[lat], g["ndcg@10"], label=f"{policy} N={n}", marker="o" if policy == "static" else "^"
            )
        front = pareto(tab, lat).sort_values(lat)
        ax.plot(front[lat], front["ndcg@10"], "k--", lw=1, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(f"{lat.split('_')[0]} latency (ms, log scale)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("nDCG@10")
    axes[1].legend(fontsize=8)
    fig.suptitle("Cascade quality vs latency under the simulated load")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_scatter(teacher: np.ndarray, students: dict[str, np.ndarray], path: Path, seed: int = 0) -> None:
    plt = _plt()
    fig, axes = plt.subplots(
        1, max(1, len(students)), figsize=(4.2 * max(1, len(students)), 4), squeeze=False
    )
    idx = np.random.default_rng(seed).permutation(len(teacher))[:5000]
    for ax, (name, s) in zip(axes[0], students.items(), strict=False):
        ax.scatter(teacher[idx], s[idx], s=3, alpha=0.3)
        ax.set_xlabel("teacher score")
        ax.set_ylabel(f"{name} score")
        ax.set_title(f"{name} (Pearson {np.corrcoef(teacher, s)[0, 1]:.2f})", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_gains(per_q: dict[str, pd.Series], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    base = per_q["bm25"]
    bins = np.linspace(-1, 1, 41)
    for name, s in per_q.items():
        if name == "bm25":
            continue
        a, b = s.align(base, fill_value=0.0)
        ax.hist(
            a - b, bins=bins, histtype="step", lw=1.5, label=f"{name} (mean {float((a - b).mean()):+.3f})"
        )
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("per-query nDCG@10 gain over BM25")
    ax.set_ylabel("queries")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in df.itertuples(index=False):
        cells = []
        for v in r:
            if isinstance(v, float):
                cells.append("-" if np.isnan(v) else f"{v:.4g}")
            else:
                cells.append("-" if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


COLS = [
    "ndcg@10",
    "mrr@10",
    "recall@100",
    "recovered",
    "kendall_tau_vs_teacher",
    "kendall_tau_top10_vs_teacher",
    "ndcg@10_vs_teacher_grades",
    "ms_per_query",
    "p_vs_bm25",
]
SHORT = {
    "kendall_tau_vs_teacher": "tau",
    "kendall_tau_top10_vs_teacher": "tau@10",
    "ndcg@10_vs_teacher_grades": "t-ndcg@10",
    "ms_per_query": "ms/q",
}
RETRIEVER_COLS = [
    "ndcg@10",
    "mrr@10",
    "recall@100",
    "index_bytes_per_doc",
    "active_terms_per_doc",
    "active_terms_per_query",
    "ms_per_query_batched",
]


def table(metrics: dict[str, Any], fmt: str = "text", section: str = "rankers") -> str:
    """A section of metrics.json (rankers, or retrievers) as an aligned text table or a Markdown table."""
    cols = COLS if section == "rankers" else RETRIEVER_COLS
    rows = []
    for name, m in metrics[section].items():
        cells = []
        for c in cols:
            v = m.get(c)
            cells.append(
                "-"
                if v is None
                else (f"{v:.2g}" if c.startswith("p_") else f"{v:.4f}" if v < 100 else f"{v:.0f}")
            )
        rows.append([name, *cells])
    head = [SHORT.get(c, c) for c in cols]
    if fmt == "md":
        return md_table(pd.DataFrame(rows, columns=[section[:-1], *head]))
    w = max(len(r[0]) for r in rows) + 2
    cw = max(len(h) for h in head) + 2
    lines = [f"{section[:-1]:<{w}}" + "".join(f"{c:>{cw}}" for c in head)]
    lines += [f"{r[0]:<{w}}" + "".join(f"{x:>{cw}}" for x in r[1:]) for r in rows]
    return "\n".join(lines)


def write_report(
    ws: Workspace,
    metrics: dict[str, Any],
    cands: pd.DataFrame,
    rankers: list,
    per_q: dict[str, pd.Series],
    cascade: pd.DataFrame | None,
) -> Path:
    plots = ws.plots
    plots.mkdir(exist_ok=True)
    by = {r.name: r for r in rankers}
    parts = [
        f"# Evaluation report ({metrics['split']} split, {cands.qid.nunique()} queries)",
        "",
        "nDCG@10, MRR@10, Recall@100 and MAP against the qrels; Kendall tau: mean per-query rank agreement with "
        "the teacher (tau@10: over the teacher's top 10); t-ndcg@10: nDCG@10 against grades from the teacher's "
        "scores; recovered: share of the teacher's nDCG@10 gain over BM25; ms/q: median time to score one "
        "query's candidates on this machine; p_vs_bm25: paired t-test over per-query nDCG@10.",
        "",
        table(metrics, fmt="md"),
        "",
    ]
    if "retrievers" in metrics:
        parts += [
            "## Students as retrievers (whole corpus)",
            "",
            "BM25's row is its candidate list; each student searches every document exactly (dense: inner "
            "product; multi-vector: MaxSim over float16 token vectors; sparse: term weights as a sparse matrix). "
            "index_bytes_per_doc: the size of what it searches; ms_per_query_batched: encoding the corpus and "
            "every query, then searching, divided by the queries.",
            "",
            table(metrics, fmt="md", section="retrievers"),
            "",
        ]
    students = {r.name: r.scores for r in rankers if r.kind == "student"}
    if "teacher" in by and students:
        plot_scatter(by["teacher"].scores, students, plots / "teacher_vs_student.png")
        parts += ["## Teacher vs students", "", "![teacher vs student](plots/teacher_vs_student.png)", ""]
    if len(per_q) > 1:
        plot_gains(per_q, plots / "gain_hist.png")
        parts += ["## Per-query gain over BM25", "", "![gains](plots/gain_hist.png)", ""]
    if cascade is not None and "cascade" in metrics:
        c = metrics["cascade"]
        plot_pareto(cascade, plots / "pareto.png")
        costs = c["costs"]
        best = c["best_under_budget"]
        best_txt = (
            f"policy={best['policy']}, N={best['n']}, k={best['k']}, SLA={best['sla_ms']} ms: nDCG@10 "
            f"{best['ndcg@10']:.4f}, p99 {best['p99_ms']:.1f} ms"
            if best
            else "none meets it"
        )
        cols = ["policy", "n", "k", "sla_ms", "ndcg@10", "p50_ms", "p99_ms", "teacher_on", "mean_k"]
        parts += [
            "## Cascade: retrieval -> student (top N) -> teacher (top k)",
            "",
            f"Student: {c['student']}. Measured costs: retrieval {costs['retrieval_ms']:.2f} ms/query, student "
            f"{costs['student_ms_per_doc']:.4f} ms/doc, teacher {costs['teacher_ms_per_doc']:.3f} ms/doc. Load: "
            f"{c['load']}. Dynamic policies pick, per query, the largest k whose wait + service fits the SLA "
            "(k=0: teacher off).",
            "",
            f"Best setting with p99 <= {c['p99_budget_ms']} ms: {best_txt}.",
            "",
            md_table(cascade[cols]),
            "",
            "![pareto](plots/pareto.png)",
            "",
        ]
    write_text_atomic("\n".join(parts), ws.report)
    return ws.report


def save_figure(fig, path: Path) -> None:
    """A PNG written whole (temp sibling, then renamed)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
