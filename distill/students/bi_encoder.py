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
scores as labels (`distill/students/examples.py`). The model lands in `models/bi_encoder/<loss>/` as a normal
sentence-transformers folder, so a multirun over losses keeps both.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from distill.data.beir import Dataset
from distill.errors import DataError
from distill.ir.metrics import evaluate, quality
from distill.students import neural
from distill.students.base import Context, FunctionScorer, Scorer, student_meta, trained_config
from distill.students.schema import BiEncoderConfig
from distill.workspace import Workspace, write_json_atomic

log = logging.getLogger(__name__)

HYBRID_FILE = "distill_hybrid.json"  # in the model folder: the hybrid reranker's BM25 weight


# student.similarity -> sentence-transformers' similarity_fn_name, saved with the model
SIMILARITY_FN = {"dot": "dot", "cos": "cosine"}


def build_student_model(
    bc: BiEncoderConfig, ws: Workspace, ds: Dataset | None, teacher: Callable[[], str]
) -> Any:
    """The student's SentenceTransformer, its `similarity_fn_name` set to what it is trained with, so that the
    saved folder scores the same through `SentenceTransformer(folder).similarity` as through this project."""
    model = _new_model(bc, teacher)
    model.similarity_fn_name = SIMILARITY_FN[bc.similarity]
    return model


def _new_model(bc: BiEncoderConfig, teacher_base: Callable[[], str]) -> Any:
    from sentence_transformers import SentenceTransformer, models  # type: ignore[attr-defined]

    base = bc.base_model
    if base == "static":
        from transformers import AutoTokenizer

        teacher = teacher_base()
        tok = AutoTokenizer.from_pretrained(teacher)
        torch.manual_seed(bc.seed)
        if bc.embedding_dim:
            emb = models.StaticEmbedding(tok, embedding_dim=bc.embedding_dim)
        else:  # start from the teacher's word embeddings
            from transformers import AutoModel

            weights = AutoModel.from_pretrained(teacher).get_input_embeddings().weight.detach().clone()
            emb = models.StaticEmbedding(tok, embedding_weights=weights)
        return SentenceTransformer(modules=[emb], device=neural.device())
    if base in ("teacher", "scratch"):
        word = neural.base_transformer(bc, teacher_base)
        pool = models.Pooling(word.get_embedding_dimension(), pooling_mode=bc.pooling)
        return SentenceTransformer(modules=[word, pool], device=neural.device())
    model = SentenceTransformer(base, device=neural.device())
    model.max_seq_length = bc.max_length
    return model


def _similarity(bc: BiEncoderConfig):
    from sentence_transformers import util

    return util.pairwise_dot_score if bc.similarity == "dot" else util.pairwise_cos_sim


def _loss(bc: BiEncoderConfig, model: Any) -> Any:
    from sentence_transformers import losses  # type: ignore[attr-defined]

    if bc.loss == "margin_mse":
        return losses.MarginMSELoss(model, similarity_fct=_similarity(bc))
    return losses.DistillKLDivLoss(model, similarity_fct=_similarity(bc), temperature=bc.temperature)


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
    norm = similarity == "cos"
    return neural.rerank_rows(ds, cands, lambda texts, query: encode(model, texts, norm), _dot)


def _dot(q: np.ndarray, q_idx: np.ndarray, d: np.ndarray, d_idx: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", q[q_idx], d[d_idx])


def dense_retrieve(
    model: Any, ds: Dataset, qids: list[str], k: int, similarity: str = "dot", batch: int = 256
) -> pd.DataFrame:
    """Exact top-k search over the whole corpus (sentence-transformers' `semantic_search`, chunked dot products;
    the embeddings are normalised for cosine). Beyond a few million documents use an ANN index (faiss HNSW/IVF)."""
    import torch
    from sentence_transformers.util import dot_score, semantic_search

    doc_ids = np.asarray(ds.corpus.index, dtype=object)
    d = encode(model, ds.doc_texts(list(doc_ids)), similarity == "cos")
    q = encode(model, ds.queries.loc[qids, "text"].tolist(), similarity == "cos")
    hits = semantic_search(
        torch.from_numpy(q), torch.from_numpy(d), query_chunk_size=batch, top_k=min(k, len(doc_ids)),
        score_function=dot_score,
    )  # fmt: skip
    return pd.DataFrame(
        {
            "qid": np.repeat(qids, [len(h) for h in hits]),
            "docid": doc_ids[np.array([x["corpus_id"] for h in hits for x in h], np.int64)],
            "score": np.array([x["score"] for h in hits for x in h], np.float32),
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
    out = {"rerank": quality(qrels, cands[["qid", "docid"]].assign(score=student))}
    if bm25_weight is not None:
        hybrid = student + bm25_weight * cands.bm25.to_numpy(np.float64)
        out["rerank_bm25_hybrid"] = quality(qrels, cands[["qid", "docid"]].assign(score=hybrid))
    qids = sorted(set(qrels.qid) & set(ds.queries.index))
    out["dense"] = quality(qrels, dense_retrieve(model, ds, qids, bc.retrieve_k, bc.similarity))
    return out


def finish(model: Any, ds: Dataset, cands: pd.DataFrame, bc: BiEncoderConfig, folder: Path) -> dict:
    """The hybrid's BM25 weight (saved beside the model) and the test metrics: as a reranker, as the hybrid and
    as a dense retriever."""
    weight, weights = (
        fit_bm25_weight(model, ds, cands, bc.similarity) if bc.bm25_weight == "auto" else (bc.bm25_weight, {})
    )
    if weight is not None:
        write_json_atomic({"bm25_weight": weight, "train_ndcg@10_by_weight": weights}, folder / HYBRID_FILE)
    return evaluate_bi_encoder(model, ds, cands, bc, bm25_weight=weight)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train the bi-encoder with sentence-transformers' trainer (distill/students/neural.py)."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    return neural.train(
        cfg,
        neural.Recipe(
            config=BiEncoderConfig.from_cfg,
            build_model=build_student_model,
            loss=_loss,
            trainer=SentenceTransformerTrainer,
            arguments=SentenceTransformerTrainingArguments,
            finish=finish,
        ),
    )


def open_model(model_dir: Path) -> Any:
    """The saved model, on the CPU (what `load` scores with and `make export` exports)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu")


def load(model_dir: Path, ctx: Context) -> list[Scorer]:
    """The bi-encoder as a scorer of candidate rows: the documents of the context's candidates are encoded once
    (a production index holds them); each call encodes its queries. With a hybrid weight saved by training, a
    second scorer `<name>+bm25` adds w x BM25."""
    bc: BiEncoderConfig = trained_config(model_dir, BiEncoderConfig)
    norm = bc.similarity == "cos"
    model = ctx.model(model_dir, open_model(model_dir))

    def search(qids: list[str], k: int) -> tuple[pd.DataFrame, dict[str, float]]:
        run = dense_retrieve(model, ctx.ds, qids, k, bc.similarity)
        return run, {"index_bytes_per_doc": 4.0 * (model.get_embedding_dimension() or 0)}  # float32 vectors

    name = student_meta(model_dir)["name"]
    main = neural.candidate_scorer(
        name,
        ctx,
        lambda texts, query: encode(model, texts, norm),
        _dot,
        search,
    )
    score = main.score
    out: list[Scorer] = [main]
    if (model_dir / HYBRID_FILE).exists():
        w = float(json.loads((model_dir / HYBRID_FILE).read_text())["bm25_weight"])
        out.append(
            FunctionScorer(f"{name}+bm25", lambda rows: score(rows) + w * rows.bm25.to_numpy(np.float64))
        )
    return out
