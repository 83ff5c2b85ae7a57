"""Late-interaction student (ColBERT: Khattab & Zaharia, SIGIR 2020): one vector per token, scored by MaxSim.

`make train-student ARGS="student=multi_vector student.loss=kl"` (or `margin_mse`) trains a sentence-transformers
`MultiVectorEncoder` with `MultiVectorEncoderTrainer` and its distillation losses (`MultiVectorDistillKLDivLoss`,
`MultiVectorMarginMSELoss`) on the shared examples. The student starts from the teacher's encoder (default), a
fresh model of its shape, or any id / folder: a MultiVectorEncoder or PyLate checkpoint loads whole, any other
encoder (e.g. ../shared/data/all_minilm_l6_v2) gets a new `dim`-wide projection, the padding mask and L2
normalisation (ColBERT's head).

The folder is a plain `MultiVectorEncoder(path)` model. Retrieval is exact MaxSim over every document's token
vectors (`MaxSimIndex`, float16): linear in the corpus's token count (~60 tokens x 128 dims x 2 bytes per
sample-world document), right for tens of thousands of documents; beyond that use a compressed late-interaction
index (PLAID centroids + residuals, as in ColBERTv2/PLAID, or MUVERA fixed-size encodings) in front of it, or use
the student as a reranker of BM25's candidates (its role in the cascade).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from distill.data.beir import Dataset
from distill.students import neural
from distill.students.base import Context, Scorer, student_meta, trained_config
from distill.students.schema import MultiVectorConfig
from distill.workspace import Workspace


def build_model(mc: MultiVectorConfig, ws: Workspace, ds: Dataset, teacher: Callable[[], str]) -> Any:
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Normalize
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    if neural.own_checkpoint(mc.base_model, "MultiVectorEncoder"):
        return MultiVectorEncoder(mc.base_model, device=neural.device())
    word = neural.base_transformer(
        mc, teacher, query_length=mc.query_length, document_length=mc.document_length
    )
    torch.manual_seed(mc.seed)
    proj = Dense(
        word.get_embedding_dimension(),
        mc.dim,
        bias=False,
        activation_function=torch.nn.Identity(),
        module_input_name="token_embeddings",
    )
    modules = [word, proj, MultiVectorMask(), Normalize(module_input_name="token_embeddings")]
    return MultiVectorEncoder(modules=modules, device=neural.device())


def _loss(mc: MultiVectorConfig, model: Any) -> Any:
    from sentence_transformers.multi_vector_encoder import losses

    if mc.loss == "margin_mse":
        return losses.MultiVectorMarginMSELoss(model)
    return losses.MultiVectorDistillKLDivLoss(model, temperature=mc.temperature)


def encode(model: Any, texts: list[str], query: bool, batch_size: int = 64) -> list[np.ndarray]:
    """One float32 (tokens x dim) array per text (padding dropped by the model's mask)."""
    fn = model.encode_query if query else model.encode_document
    out = fn(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    return [
        np.asarray(x, np.float32).reshape(-1, model.get_embedding_dimension() or x.shape[-1]) for x in out
    ]


def _stack(vecs: list[np.ndarray], dim: int, dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """All vectors in one matrix and each text's first row (a text with no vector gets one zero vector, so that
    every segment is non-empty for `np.maximum.reduceat`)."""
    vecs = [v if len(v) else np.zeros((1, dim), np.float32) for v in vecs]
    starts = np.cumsum([0] + [len(v) for v in vecs[:-1]])
    return np.concatenate(vecs).astype(dtype, copy=False), starts


def maxsim(q: np.ndarray, docs: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """ColBERT's score of one query (tokens x dim) against documents given as stacked token rows with each
    document's first row: sum over query tokens of the max similarity over the document's tokens."""
    sim = q @ docs.T  # (query tokens, document tokens)
    return np.maximum.reduceat(sim, starts, axis=1).sum(axis=0)


class MaxSimIndex:
    """Exact late-interaction search: every document's token vectors in one float16 matrix."""

    def __init__(self, doc_ids: list[str], vecs: list[np.ndarray], dim: int):
        self.doc_ids = np.asarray(doc_ids, dtype=object)
        self.tokens, self.starts = _stack(vecs, dim, np.float16)

    @property
    def bytes_per_doc(self) -> float:
        return float(self.tokens.nbytes + self.starts.nbytes) / len(self.doc_ids)

    def search(
        self, queries: list[np.ndarray], k: int, docs_per_chunk: int = 2000
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, document rows) per query, scanning the corpus in chunks of documents."""
        n = len(self.doc_ids)
        k = min(k, n)
        best_s = np.full((len(queries), k), -np.inf, np.float32)
        best_i = np.zeros((len(queries), k), np.int64)
        for lo in range(0, n, docs_per_chunk):
            hi = min(n, lo + docs_per_chunk)
            end = self.starts[hi] if hi < n else len(self.tokens)
            chunk = self.tokens[self.starts[lo] : end].astype(np.float32)
            local = self.starts[lo:hi] - self.starts[lo]
            for j, q in enumerate(queries):
                s = np.concatenate([best_s[j], maxsim(q, chunk, local)])
                i = np.concatenate([best_i[j], np.arange(lo, hi)])
                top = np.argsort(-s, kind="stable")[:k]
                best_s[j], best_i[j] = s[top], i[top]
        return best_s, best_i


def rerank_scores(model: Any, ds: Dataset, cands: pd.DataFrame) -> np.ndarray:
    """MaxSim of every (qid, docid) row of `cands` (each distinct text encoded once)."""
    return neural.rerank_rows(ds, cands, lambda texts, query: encode(model, texts, query=query), _rerank)


def _rerank(q: list[np.ndarray], q_idx: np.ndarray, d: list[np.ndarray], d_idx: np.ndarray) -> np.ndarray:
    out = np.empty(len(q_idx), np.float64)
    dim = q[0].shape[1]
    for j in np.unique(q_idx):
        rows = np.flatnonzero(q_idx == j)
        docs, starts = _stack([d[i] for i in d_idx[rows]], dim)
        out[rows] = maxsim(q[j], docs, starts)
    return out


def retrieve(model: Any, ds: Dataset, qids: list[str], k: int) -> tuple[pd.DataFrame, dict[str, float]]:
    """Exact MaxSim top-k over the whole corpus, and the size of the index it searched."""
    doc_ids = list(ds.corpus.index)
    index = MaxSimIndex(
        doc_ids, encode(model, ds.doc_texts(doc_ids), query=False), model.get_embedding_dimension()
    )
    q = encode(model, ds.queries.loc[qids, "text"].tolist(), query=True)
    scores, idx = index.search(q, k)
    run = pd.DataFrame(
        {"qid": np.repeat(qids, idx.shape[1]), "docid": index.doc_ids[idx.ravel()], "score": scores.ravel()}
    )
    return run, {
        "index_bytes_per_doc": index.bytes_per_doc,
        "vectors_per_doc": len(index.tokens) / len(doc_ids),
    }


def finish(model: Any, ds: Dataset, cands: pd.DataFrame, mc: MultiVectorConfig, folder: Path) -> dict:
    """Test metrics as a reranker of BM25's candidates and as a retriever over the corpus (with its index size)."""
    return neural.test_metrics(
        ds,
        cands,
        lambda rows: rerank_scores(model, ds, rows),
        lambda qids: retrieve(model, ds, qids, mc.retrieve_k),
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train the late-interaction student (distill/students/neural.py)."""
    from sentence_transformers import MultiVectorEncoderTrainer, MultiVectorEncoderTrainingArguments

    return neural.train(
        cfg,
        neural.Recipe(
            config=MultiVectorConfig.from_cfg,
            build_model=build_model,
            loss=_loss,
            trainer=MultiVectorEncoderTrainer,
            arguments=MultiVectorEncoderTrainingArguments,
            finish=finish,
        ),
    )


def open_model(model_dir: Path) -> Any:
    """The saved model, on the CPU (what `load` scores with and `make export` exports)."""
    from sentence_transformers import MultiVectorEncoder

    return MultiVectorEncoder(str(model_dir), device="cpu")


def load(model_dir: Path, ctx: Context) -> list[Scorer]:
    """The student as a reranker (the context's candidate documents encoded once, as an index holds them; each
    call encodes its queries) that can also retrieve from the whole corpus."""
    model = ctx.model(model_dir, open_model(model_dir))
    trained_config(model_dir, MultiVectorConfig)  # the folder's config passes today's checks
    name = student_meta(model_dir)["name"]
    return [
        neural.candidate_scorer(
            name,
            ctx,
            lambda texts, query: encode(model, texts, query=query),
            _rerank,
            lambda qids, k: retrieve(model, ctx.ds, qids, k),
        )
    ]
