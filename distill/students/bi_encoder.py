"""Bi-encoder student: a sentence-transformers model distilled from the teacher's soft labels.

`make train-student ARGS="student=bi_encoder student.loss=margin_mse"` (or `kl`) trains a `SentenceTransformer`
with `SentenceTransformerTrainer` and sentence-transformers' own losses:

- `margin_mse`: `MarginMSELoss` (Hofstätter et al., 2020, "Improving Efficient Neural Ranking Models with
  Cross-Architecture Knowledge Distillation"): the student's score margin between the positive and each negative
  regresses onto the teacher's margin.
- `kl`: `DistillKLDivLoss` (KL divergence between the teacher's and the student's softmax over the positive and
  the n negatives; temperature `student.temperature`), as in listwise distillation (e.g. RocketQAv2, Ren et al.,
  2021).

Each training example is a train query, one positive and `student.negatives` hard negatives with the teacher's
scores as labels (`build_examples`). The model lands in `models/bi_encoder/<loss>/` as a normal
sentence-transformers folder, so a multirun over losses keeps both.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from distill.config import BiEncoderConfig
from distill.data.beir import Dataset
from distill.data.prepare import load_dataset
from distill.distributed import process_ranks
from distill.errors import DataError
from distill.hf_training import time_limit_callback, training_args
from distill.ir.metrics import evaluate
from distill.students.base import STUDENT_FILE, Context, FunctionScorer, Scorer, write_student_json
from distill.teacher.soft_labels import read_soft_labels
from distill.tracking import start_run
from distill.workspace import Workspace, staged_dir, write_json_atomic

log = logging.getLogger(__name__)

HYBRID_FILE = "distill_hybrid.json"  # in the model folder: the hybrid reranker's BM25 weight


def build_examples(
    soft: pd.DataFrame, qrels: pd.DataFrame, queries: pd.DataFrame, bc: BiEncoderConfig
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Training examples from teacher-scored candidates: one row per (query, positive).

    Returns (examples with columns qid, pos, negs (list), scores (list: the positive's teacher score, then the
    negatives'), counts of queries skipped by reason). Negatives are drawn (seeded) from the query's candidates
    ranked within the top `negative_depth` by the teacher, excluding judged-relevant documents and those the
    teacher scores above `positive score - negative_margin`; a positive with fewer than `negatives` such
    negatives is skipped (counted, never silent).
    """
    unknown = sorted(set(soft.qid) - set(queries.index))
    if unknown:
        raise DataError(
            f"soft labels: {len(unknown)} qid(s) not among the dataset's queries (first: {unknown[:3]}); "
            f"were they scored on another dataset? Re-run `make teacher-score` with this data="
        )
    rng = np.random.default_rng(bc.seed)
    rel = qrels[qrels.relevance > 0]
    relevant = {q: set(g.docid) for q, g in rel.groupby("qid")}
    skipped = {"no_positive": 0, "too_few_negatives": 0}
    rows = []
    for qid, g in soft.groupby("qid", sort=True):
        g = g.sort_values("score", ascending=False, kind="stable")
        rel_q = relevant.get(qid, set())
        pos = g[g.docid.isin(rel_q)] if bc.positives == "qrels" else g.head(1)
        if pos.empty:
            skipped["no_positive"] += 1
            continue
        pool = g.head(bc.negative_depth)
        pool = pool[~pool.docid.isin(rel_q | set(pos.docid))]
        for p_doc, p_score in zip(pos.docid, pos.score, strict=True):
            ok = pool if bc.negative_margin is None else pool[pool.score < p_score - bc.negative_margin]
            if len(ok) < bc.negatives:
                skipped["too_few_negatives"] += 1
                continue
            for _ in range(bc.samples_per_positive):
                pick = np.sort(rng.choice(len(ok), size=bc.negatives, replace=False))
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


def _hf_dataset(ds: Dataset, ex: pd.DataFrame, n_neg: int) -> Any:
    from datasets import Dataset as HFDataset

    cols: dict[str, list] = {
        "query": ds.queries.loc[ex.qid, "text"].tolist(),
        "positive": ds.doc_texts(list(ex.pos)),
    }
    for i in range(n_neg):
        cols[f"negative_{i + 1}"] = ds.doc_texts([n[i] for n in ex.negs])
    cols["label"] = [list(s) for s in ex.scores]
    return HFDataset.from_dict(cols)


def build_student_model(bc: BiEncoderConfig, ws: Workspace) -> Any:
    from sentence_transformers import SentenceTransformer, models  # type: ignore[attr-defined]

    base = bc.base_model
    if base == "static":
        from transformers import AutoTokenizer

        teacher = ws.require(ws.model("teacher"), "train-teacher")
        tok = AutoTokenizer.from_pretrained(teacher)
        torch.manual_seed(bc.seed)
        if bc.embedding_dim:
            emb = models.StaticEmbedding(tok, embedding_dim=bc.embedding_dim)
        else:  # start from the teacher's word embeddings
            from transformers import AutoModel

            weights = AutoModel.from_pretrained(teacher).get_input_embeddings().weight.detach().clone()
            emb = models.StaticEmbedding(tok, embedding_weights=weights)
        return SentenceTransformer(modules=[emb], device=_device())
    if base in ("teacher", "scratch"):
        teacher = ws.require(ws.model("teacher"), "train-teacher")
        word = models.Transformer(str(teacher), max_seq_length=bc.max_length)
        if base == "scratch":
            from transformers import AutoConfig, AutoModel

            torch.manual_seed(bc.seed)
            word.auto_model = AutoModel.from_config(AutoConfig.from_pretrained(teacher))
        pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode=bc.pooling)
        return SentenceTransformer(modules=[word, pool], device=_device())
    model = SentenceTransformer(base, device=_device())
    model.max_seq_length = bc.max_length
    return model


def _device() -> str:
    """This process's GPU under a multi-process launch, else the GPU if there is one, else the CPU."""
    d = process_ranks().device("auto")
    return d if d != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")


def _similarity(bc: BiEncoderConfig):
    from sentence_transformers import util

    return util.pairwise_dot_score if bc.similarity == "dot" else util.pairwise_cos_sim


def _loss(bc: BiEncoderConfig, model: Any) -> Any:
    from sentence_transformers import losses  # type: ignore[attr-defined]

    if bc.loss == "margin_mse":
        return losses.MarginMSELoss(model, similarity_fct=_similarity(bc))
    return losses.DistillKLDivLoss(model, similarity_fct=_similarity(bc), temperature=bc.temperature)


@torch.no_grad()
def held_out_loss(model: Any, loss: Any, rows: Any) -> float:
    """The distillation loss on a fixed set of examples (the first 64): compared before and after training."""
    cols = [c for c in rows.column_names if c != "label"]
    feats = [
        {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in model.tokenize(rows[c]).items()}
        for c in cols
    ]
    was_training = model.training
    model.eval()
    value = float(loss(feats, torch.tensor(rows["label"], device=model.device)))
    model.train(was_training)
    return value


def encode(model: Any, texts: list[str], normalize: bool = False, batch_size: int = 256) -> np.ndarray:
    """Embeddings as float32; `normalize` makes them unit length (cosine similarity as a dot product)."""
    return np.asarray(
        model.encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=normalize,
            show_progress_bar=False,
        ),
        np.float32,
    )


def rerank_scores(model: Any, ds: Dataset, cands: pd.DataFrame, similarity: str = "dot") -> np.ndarray:
    """The bi-encoder's score for every (qid, docid) row of `cands` (each distinct text encoded once)."""
    qids, q_idx = np.unique(cands.qid.to_numpy(), return_inverse=True)
    dids, d_idx = np.unique(cands.docid.to_numpy(), return_inverse=True)
    norm = similarity == "cos"
    q = encode(model, ds.queries.loc[qids, "text"].tolist(), norm)
    d = encode(model, ds.doc_texts(list(dids)), norm)
    return np.einsum("ij,ij->i", q[q_idx], d[d_idx])


def dense_retrieve(
    model: Any, ds: Dataset, qids: list[str], k: int, similarity: str = "dot", batch: int = 256
) -> pd.DataFrame:
    """Exact top-k search over the whole corpus: faiss (IndexFlatIP) when installed, else numpy."""
    doc_ids = list(ds.corpus.index)
    d = encode(model, ds.doc_texts(doc_ids), similarity == "cos")
    q = encode(model, ds.queries.loc[qids, "text"].tolist(), similarity == "cos")
    k = min(k, len(doc_ids))
    try:
        import faiss  # type: ignore[import-not-found]

        index = faiss.IndexFlatIP(d.shape[1])
        index.add(d)
        scores, idx = index.search(q, k)
    except ImportError:
        scores = np.empty((len(qids), k), np.float32)
        idx = np.empty((len(qids), k), np.int64)
        for s in range(0, len(qids), batch):
            sim = q[s : s + batch] @ d.T
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            part = np.take_along_axis(sim, top, axis=1)
            order = np.argsort(-part, axis=1, kind="stable")
            idx[s : s + batch] = np.take_along_axis(top, order, axis=1)
            scores[s : s + batch] = np.take_along_axis(part, order, axis=1)
    return pd.DataFrame(
        {
            "qid": np.repeat(qids, k),
            "docid": np.asarray(doc_ids, dtype=object)[idx.ravel()],
            "score": scores.ravel(),
        }
    )


BM25_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def fit_bm25_weight(model: Any, ds: Dataset, cands: pd.DataFrame, similarity: str) -> tuple[float, dict]:
    """The hybrid's BM25 weight: the one of BM25_WEIGHTS whose student + w * bm25 ranks the train split's
    candidates best (nDCG@10 against the train qrels). Returns (w, nDCG@10 per weight)."""
    train = cands[cands.split == "train"]
    if train.empty or "train" not in ds.qrels:
        raise DataError(
            "student.bm25_weight=auto needs train candidates and train qrels; set a number or null"
        )
    student = rerank_scores(model, ds, train, similarity)
    bm25 = train.bm25.to_numpy(np.float64)
    table = {
        w: evaluate(ds.qrels["train"], train[["qid", "docid"]].assign(score=student + w * bm25))["ndcg@10"]
        for w in BM25_WEIGHTS
    }
    return max(table, key=lambda w: table[w]), {str(w): round(v, 4) for w, v in table.items()}


def evaluate_bi_encoder(
    model: Any,
    ds: Dataset,
    cands: pd.DataFrame,
    bc: BiEncoderConfig,
    split: str = "test",
    bm25_weight: float | None = None,
) -> dict:
    """nDCG@10 etc. as a reranker of BM25's candidates (`cands`: candidates.parquet), as the hybrid reranker
    (student + w * bm25) when a weight is given, and as a dense retriever over the corpus."""
    cands = cands[cands.split == split]
    qrels = ds.qrels[split]
    student = rerank_scores(model, ds, cands, bc.similarity)
    out = {"rerank": evaluate(qrels, cands[["qid", "docid"]].assign(score=student))}
    if bm25_weight is not None:
        hybrid = student + bm25_weight * cands.bm25.to_numpy(np.float64)
        out["rerank_bm25_hybrid"] = evaluate(qrels, cands[["qid", "docid"]].assign(score=hybrid))
    qids = sorted(set(qrels.qid) & set(ds.queries.index))
    out["dense"] = evaluate(qrels, dense_retrieve(model, ds, qids, bc.retrieve_k, bc.similarity))
    return {mode: {k: v for k, v in m.items() if k != "queries"} for mode, m in out.items()}


def examples_for(
    cfg: DictConfig, bc: BiEncoderConfig, ws: Workspace, ds: Dataset
) -> tuple[pd.DataFrame, dict]:
    """The training examples of the train queries (and how many positives were skipped, by reason)."""
    soft = read_soft_labels(ws.require(ws.soft_labels, "teacher-score"), ws.candidates)
    cands = pd.read_parquet(ws.require(ws.candidates, "candidates"))
    train_qids = set(cands.qid[cands.split == "train"])
    ex, skipped = build_examples(
        soft[soft.qid.isin(train_qids)], ds.judged("train", "train-student"), ds.queries, bc
    )
    if ex.empty:
        raise DataError(
            f"no training example: {skipped} (queries skipped by reason); lower student.negatives or "
            f"student.negative_margin, or raise student.negative_depth"
        )
    if any(skipped.values()):
        log.warning("bi-encoder examples: skipped %s", skipped)
    return ex, skipped


def save_and_evaluate(
    cfg: DictConfig, bc: BiEncoderConfig, ws: Workspace, ds: Dataset, model: Any, facts: dict[str, Any]
) -> dict[str, Any]:
    """The model folder, written whole with its hybrid weight, test metrics and student.json."""
    cands = pd.read_parquet(ws.candidates)
    with staged_dir(ws.model("bi_encoder") / bc.loss) as tmp:  # a crash leaves the previous folder as it was
        model.save(str(tmp))
        weight, weights = (
            fit_bm25_weight(model, ds, cands, bc.similarity)
            if bc.bm25_weight == "auto"
            else (bc.bm25_weight, {})
        )
        if weight is not None:
            write_json_atomic({"bm25_weight": weight, "train_ndcg@10_by_weight": weights}, tmp / HYBRID_FILE)
        metrics = evaluate_bi_encoder(model, ds, cands, bc, bm25_weight=weight)
        info = {
            "loss": bc.loss,
            "base_model": bc.base_model,
            **facts,
            "similarity": bc.similarity,
            "bm25_weight": weight,
            "test": metrics,
        }
        write_json_atomic(info, tmp / "distill_train.json")
        write_student_json(
            tmp,
            name=f"bi_encoder_{bc.loss}",
            loader="distill.students.bi_encoder:load",
            ws=ws,
            config=cfg.student,
        )
    return info


def run(cfg: DictConfig) -> dict[str, Any]:
    """Build the examples, train with sentence-transformers' trainer (DDP under a launcher), save and evaluate."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    bc = BiEncoderConfig.from_cfg(cfg.student)
    ws = Workspace.from_cfg(cfg)
    ranks = process_ranks()  # under accelerate launch / torchrun the trainer runs DDP over these processes
    ds = load_dataset(cfg)
    torch.manual_seed(bc.seed)
    ex, skipped = examples_for(cfg, bc, ws, ds)
    out = ws.model("bi_encoder") / bc.loss
    t0 = time.perf_counter()
    model = build_student_model(bc, ws)
    args = training_args(
        SentenceTransformerTrainingArguments,
        cfg,
        f"bi_encoder-{bc.loss}",
        epochs=bc.epochs,
        batch_size=bc.batch_size,
        lr=bc.lr,
        warmup_ratio=bc.warmup_ratio,
        seed=bc.seed,
        workspace=ws,
    )
    with start_run(cfg, stage=f"train-student-bi_encoder-{bc.loss}") as tracker:
        train_ds = _hf_dataset(ds, ex, bc.negatives)
        loss = _loss(bc, model)
        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            loss=loss,
            callbacks=[time_limit_callback(bc.max_seconds, "student.max_seconds")],
        )
        probe = train_ds.select(range(min(64, len(train_ds))))
        loss_before = held_out_loss(model, loss, probe)
        result = trainer.train()
        seconds = time.perf_counter() - t0
        if not ranks.is_main:  # rank 0 saves, evaluates and reports
            return {"rank": ranks.rank, "steps": result.global_step}
        facts = {
            "examples": len(ex),
            "skipped": skipped,
            "steps": result.global_step,
            "train_loss": result.training_loss,
            "probe_loss_before": loss_before,
            "probe_loss_after": held_out_loss(model, loss, probe),
            "train_seconds": round(seconds, 1),
            "processes": ranks.world,
        }
        info = save_and_evaluate(cfg, bc, ws, ds, model, facts)
        metrics, weight = info["test"], info["bm25_weight"]
        tracker.summary(
            {f"test/{mode}/{k}": v for mode, m in metrics.items() for k, v in m.items()}
            | {"train/seconds": seconds, "train/loss": result.training_loss}
        )
        tracker.artifact(out, type="model", name=f"bi_encoder-{bc.loss}")
    r, d = metrics["rerank"], metrics["dense"]
    print(
        f"train-student bi_encoder ({bc.loss}): {len(ex)} examples, {result.global_step} steps in {seconds:.0f}s; "
        f"test nDCG@10 reranking BM25 {r['ndcg@10']:.4f}"
        + (
            f", hybrid with {weight} x BM25 {metrics['rerank_bm25_hybrid']['ndcg@10']:.4f}"
            if weight is not None
            else ""
        )
        + f", dense retrieval {d['ndcg@10']:.4f} (R@100 {d['recall@100']:.4f}) -> {out}"
    )
    return info


def load(model_dir: Path, ctx: Context) -> list[Scorer]:
    """The bi-encoder as a scorer of candidate rows: the documents of the context's candidates are encoded once
    (a production index holds them); each call encodes its queries. With a hybrid weight saved by training, a
    second scorer `<name>+bm25` adds w x BM25."""
    from sentence_transformers import SentenceTransformer

    info = json.loads((model_dir / "distill_train.json").read_text())
    norm = info.get("similarity", "dot") == "cos"
    model = SentenceTransformer(str(model_dir), device="cpu")
    dids = ctx.cands.docid.unique()
    docs = encode(model, ctx.ds.doc_texts(list(dids)), norm)
    row_of = pd.Series(np.arange(len(dids)), index=dids)
    qtext = ctx.ds.queries["text"]

    def score(rows: pd.DataFrame) -> np.ndarray:
        qids, q_idx = np.unique(rows.qid.to_numpy(), return_inverse=True)
        q = encode(model, qtext.loc[qids].tolist(), norm)
        return np.einsum("ij,ij->i", q[q_idx], docs[row_of.loc[rows.docid.to_numpy()].to_numpy()])

    name = json.loads((model_dir / STUDENT_FILE).read_text())["name"]
    out: list[Scorer] = [FunctionScorer(name, score)]
    if (model_dir / HYBRID_FILE).exists():
        w = float(json.loads((model_dir / HYBRID_FILE).read_text())["bm25_weight"])
        out.append(
            FunctionScorer(f"{name}+bm25", lambda rows: score(rows) + w * rows.bm25.to_numpy(np.float64))
        )
    return out
