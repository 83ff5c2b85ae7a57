"""Simulated click logs: a position-based click model (PBM) over a logged ranking.

Works on any dataset with qrels (the clicks are SIMULATED, not real behaviour). The PBM (Craswell et al., 2008;
Joachims et al., 2017, "Unbiased Learning-to-Rank with Biased Feedback") clicks a shown document when the user
examines its position, with probability (1/position)^eta, and finds it attractive, with a probability that
grows with its relevance grade (plus per-document noise). Each session lightly shuffles the logged ranking
(random adjacent swaps), which is what lets examination propensities be estimated from the log later.
Dwell times are log-normal, longer for relevant documents.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd


def simulate_clicks(ranking: pd.DataFrame, qrels: pd.DataFrame, **options: Any) -> pd.DataFrame:
    """One row per impression: session, qid, docid, position (1-based), clicked, dwell_s, timestamp.

    `ranking` has columns qid, docid, rank (the logged ranking, e.g. BM25's top 10);
    `qrels` has qid, docid, relevance (missing pairs count as grade 0); `options`: those of `click_batches`.
    """
    return pd.concat(list(click_batches(ranking, qrels, **options)), ignore_index=True)


def click_batches(
    ranking: pd.DataFrame,
    qrels: pd.DataFrame,
    *,
    sessions_per_query: int = 20,
    eta: float = 1.0,
    attractiveness: tuple[float, ...] = (0.04, 0.3, 0.65, 0.85),
    p_swap: float = 0.3,
    seed: int = 0,
    start: str = "2025-01-01",
    end: str = "2026-01-01",
    batch_sessions: int = 100_000,
) -> Iterator[pd.DataFrame]:
    """`simulate_clicks`' rows, `batch_sessions` sessions at a time (at least one frame, empty when there is no
    session). Each of the model's draws (swaps, examination, attraction, dwell, time) covers every session before
    the next begins, in the order one call over all sessions would draw them, so the log is the same for any batch
    size; memory holds the draws' outcomes (a byte or two per shown slot, and the clicks' dwell times) and one batch's
    random numbers and rows (strings and timestamps: several times the numbers' size)."""
    rng = np.random.default_rng(seed)
    ranking = ranking.sort_values(["qid", "rank"], kind="stable")
    qids, q_idx = np.unique(ranking["qid"].astype(str).to_numpy(), return_inverse=True)
    n_per_q = np.bincount(q_idx, minlength=len(qids))
    slot = ranking.groupby("qid", sort=False).cumcount().to_numpy()
    width = int(n_per_q.max()) if len(qids) else 0
    rel = qrels.set_index([qrels["qid"].astype(str), qrels["docid"].astype(str)])["relevance"]
    pairs = pd.MultiIndex.from_arrays([ranking["qid"].astype(str), ranking["docid"].astype(str)])
    grades = np.clip(rel.reindex(pairs).fillna(0).to_numpy(int), 0, len(attractiveness) - 1)
    # Per (query, document) attractiveness, with fixed per-pair noise shared by all its sessions.
    attract = np.clip(np.asarray(attractiveness)[grades] + rng.normal(0, 0.08, len(grades)), 0.01, 0.95)
    doc_m = np.full((len(qids), width), -1)
    doc_m[q_idx, slot] = np.arange(len(ranking))

    n = len(qids) * sessions_per_query
    sess_q = np.repeat(np.arange(len(qids)), sessions_per_query)
    # each session's order of the logged slots: one byte a slot while the ranking is under 256 deep
    order = np.tile(np.arange(width, dtype=np.min_scalar_type(width)), (n, 1))
    rows = np.arange(n)
    for i in range(width - 1):  # sequential adjacent swaps, vectorised over all sessions
        swap = (rng.random(n) < p_swap) & (i + 1 < n_per_q[sess_q])
        a, b = order[rows[swap], i].copy(), order[rows[swap], i + 1].copy()
        order[rows[swap], i], order[rows[swap], i + 1] = b, a
    del rows

    def shown(a: int, b: int) -> np.ndarray:
        """Sessions a..b: the ranking's row shown at each position (-1: none)."""
        return doc_m[sess_q[a:b, None], order[a:b]]

    # Each draw covers every session in turn, as one call over all of them would (a generator fills an array
    # element by element), but `batch_sessions` rows at a time, so that only the draws' outcomes are held.
    pos = np.arange(1, width + 1)
    spans = [(a, min(n, a + batch_sessions)) for a in range(0, n, batch_sessions)]
    examined = np.empty((n, width), dtype=bool)
    for a, b in spans:
        examined[a:b] = rng.random((b - a, width)) < (1.0 / pos) ** eta
    clicked = np.empty((n, width), dtype=bool)
    for a, b in spans:
        s = shown(a, b)
        clicked[a:b] = examined[a:b] & (rng.random((b - a, width)) < attract[np.where(s >= 0, s, 0)])
    del examined
    dwell = []  # per span, the dwell times of its clicked slots only (in row order): most slots get no click
    for a, b in spans:
        s = shown(a, b)
        g = grades[np.where(s >= 0, s, 0)]
        dwell.append(rng.lognormal(np.log(8 + 25 * g), 0.6)[clicked[a:b]])
    t0 = pd.Timestamp(start, tz="UTC").value // 10**9
    t1 = pd.Timestamp(end, tz="UTC").value // 10**9
    ts = rng.integers(t0, t1, size=n)
    qid, docid = ranking["qid"].astype(str).to_numpy(), ranking["docid"].astype(str).to_numpy()
    for i, (a, b) in enumerate(spans or [(0, 0)]):
        s = shown(a, b)
        v = s >= 0
        flat = s[v]
        dwell_ab = np.zeros((b - a, width))
        if spans:
            dwell_ab[clicked[a:b]] = dwell[i]
        out = pd.DataFrame(
            {
                "session": np.broadcast_to(np.arange(a, b)[:, None], v.shape)[v],
                "qid": qid[flat],
                "docid": docid[flat],
                "position": np.broadcast_to(pos, v.shape)[v],
                "clicked": clicked[a:b][v],
                "dwell_s": dwell_ab[v].round(1),
                "timestamp": pd.to_datetime(np.broadcast_to(ts[a:b, None], v.shape)[v], unit="s", utc=True),
            }
        )
        out["qid"] = out["qid"].astype("string")
        out["docid"] = out["docid"].astype("string")
        yield out


def logged_ranking(
    docids: list[str],
    doc_texts: Sequence[str],
    qids: list[str],
    query_texts: list[str],
    depth: int = 10,
    **bm25,
) -> pd.DataFrame:
    """BM25's top `depth` of each query (qid, docid, rank): the ranking a production system would have shown and
    logged. `bm25`: `BM25Index` options (e.g. stemmer=None)."""
    from distill.ir.bm25 import BM25Index

    positions, _ = BM25Index(doc_texts, **bm25).search(query_texts, k=depth)
    return pd.DataFrame(
        [(q, docids[int(p)], r + 1) for q, ps in zip(qids, positions, strict=True) for r, p in enumerate(ps)],
        columns=["qid", "docid", "rank"],
    )


def write_log(root, log: pd.DataFrame | Iterable[pd.DataFrame]) -> tuple[int, int]:
    """`logs/impressions.parquet` of a BEIR folder, from one frame or from batches (`click_batches`: each a row
    group, held one at a time); returns its rows and clicks."""
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from distill.workspace import release_arrow_memory

    (Path(root) / "logs").mkdir(exist_ok=True)
    writer, rows, clicks = None, 0, 0
    try:
        for batch in [log] if isinstance(log, pd.DataFrame) else log:
            table = pa.Table.from_pandas(batch, preserve_index=False, schema=writer and writer.schema)
            writer = writer or pq.ParquetWriter(Path(root) / "logs" / "impressions.parquet", table.schema)
            writer.write_table(table)
            rows, clicks = rows + len(batch), clicks + int(batch["clicked"].sum())
            del table, batch
            release_arrow_memory()  # what making the batch freed, back to the system before the next
    finally:
        if writer is not None:
            writer.close()
    return rows, clicks


def add_simulated_clicks(
    root,
    sessions_per_query: int = 20,
    depth: int = 10,
    seed: int = 0,
    start: str = "2025-01-01",
    end: str = "2026-01-01",
) -> pd.DataFrame:
    """Simulate a click log for any BEIR folder with qrels: BM25's top `depth` per judged query is the logged
    ranking. Writes `logs/impressions.parquet` (and `logs/README.md` saying the clicks are SIMULATED)."""
    from pathlib import Path

    from distill.data.beir import load_beir

    root = Path(root)
    ds = load_beir(root)
    qrels = pd.concat(ds.qrels.values(), ignore_index=True)
    qids = list(dict.fromkeys(qrels.qid))
    docids = list(ds.corpus.index)
    ranking = logged_ranking(docids, ds.doc_texts(docids), qids, ds.queries.loc[qids, "text"].tolist(), depth)
    log = simulate_clicks(
        ranking, qrels, sessions_per_query=sessions_per_query, seed=seed, start=start, end=end
    )
    write_log(root, log)
    (root / "logs" / "README.md").write_text(
        "SIMULATED clicks (distill.data.clicks: position-based click model over BM25's top "
        f"{depth}), not real user behaviour.\n"
    )
    return log


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m distill.data.clicks", description=__doc__)
    ap.add_argument("beir_dir", help="a dataset folder in BEIR layout, with qrels")
    ap.add_argument("sessions_per_query", nargs="?", type=int, default=20)
    args = ap.parse_args()
    out = add_simulated_clicks(args.beir_dir, args.sessions_per_query)
    print(
        f"wrote {len(out)} simulated impressions ({int(out.clicked.sum())} clicks) to {args.beir_dir}/logs/"
    )
