"""Learned-sparse student (SPLADE: Formal et al., SIGIR 2021; SPLADE v2, 2021): a weight per vocabulary term.

`make train-student ARGS="student=sparse student.loss=kl"` (or `margin_mse`) trains a sentence-transformers
`SparseEncoder` (an MLM encoder + `SpladePooling`: max over tokens of log(1 + relu(MLM logits))) with
`SparseEncoderTrainer` and `SpladeLoss`, which wraps the distillation loss (`SparseDistillKLDivLoss` or
`SparseMarginMSELoss`) with the FLOPS regulariser on queries and documents (Paria et al., ICLR 2020) that makes
the vectors sparse. The student starts from the teacher's encoder (its MLM head is new: the teacher never had
one), a fresh model of its shape, or any id / folder (a SparseEncoder checkpoint loads whole; any other encoder
gets an MLM head).

The folder is a plain `SparseEncoder(path)` model. Retrieval is a sparse matrix product against the documents'
term weights (scipy CSR: the inverted index's postings in matrix form), exact, and sparse in both sides, so it
scales like an inverted index; beyond one machine's memory, load the vectors into an inverted-index engine
(e.g. Lucene/OpenSearch's neural-sparse, Seismic, or PISA with quantised weights).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from scipy import sparse as sp

from distill.config import SparseConfig
from distill.data.beir import Dataset
from distill.students import neural
from distill.students.base import STUDENT_FILE, Context, Scorer
from distill.workspace import Workspace


def build_model(sc: SparseConfig, ws: Workspace, ds: Dataset) -> Any:
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    if neural.own_checkpoint(sc.base_model, "SparseEncoder"):
        return SparseEncoder(sc.base_model, device=neural.device())
    mlm = neural.base_transformer(sc, ws, task="fill-mask")
    if sc.head_init_steps:
        texts = ds.doc_texts(list(ds.corpus.index))
        lexical_head(mlm.model, mlm.tokenizer, texts, sc.head_init_steps, sc.max_length, sc.seed)
    return SparseEncoder(modules=[mlm, SpladePooling(pooling_strategy="max")], device=neural.device())


def lexical_head(
    model: Any, tokenizer: Any, texts: list[str], steps: int, max_length: int, seed: int
) -> None:
    """Start a new MLM head lexical: train it alone (the encoder frozen) to give back each position's own token,
    as a pretrained MLM head does at unmasked positions, then lower its bias below the logits of other tokens
    (their 99th percentile on a sample), so that SPLADE's log(1 + relu(.)) starts as the text's own words
    rather than thousands of random terms.

    Written here because an encoder trained as a cross-encoder (the teacher) has no MLM head, and a random one
    makes SPLADE start dense and unrelated to the text, which a short distillation cannot repair."""
    prefix = model.base_model_prefix
    head = [p for n, p in model.named_parameters() if not n.startswith(prefix)]
    frozen = [p for n, p in model.named_parameters() if n.startswith(prefix)]
    bias = model.get_output_embeddings().bias
    if bias is None or not head:
        return
    rng = np.random.default_rng(seed)
    for p in frozen:
        p.requires_grad_(False)
    opt = torch.optim.Adam(head, lr=3e-3)
    was_training = model.training
    model.train()

    def batch(n: int) -> dict[str, torch.Tensor]:
        chosen = [texts[i] for i in rng.choice(len(texts), size=min(n, len(texts)), replace=False)]
        enc = tokenizer(chosen, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return {k: v.to(model.device) for k, v in enc.items()}

    for _ in range(steps):
        enc = batch(32)
        mask = enc["attention_mask"].bool()
        loss = torch.nn.functional.cross_entropy(model(**enc).logits[mask], enc["input_ids"][mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in frozen:
        p.requires_grad_(True)
    model.train(was_training)
    with torch.no_grad():
        enc = batch(64)
        logits = model(**enc).logits
        logits.scatter_(2, enc["input_ids"][..., None], float("-inf"))
        others = logits.max(dim=2).values[enc["attention_mask"].bool()]
        bias -= torch.quantile(others.float(), 0.99)


def _loss(sc: SparseConfig, model: Any) -> Any:
    from sentence_transformers.sparse_encoder import losses

    inner = (
        losses.SparseMarginMSELoss(model)
        if sc.loss == "margin_mse"
        else losses.SparseDistillKLDivLoss(model, temperature=sc.temperature)
    )
    return losses.SpladeLoss(
        model,
        loss=inner,
        document_regularizer_weight=sc.document_regularizer_weight,
        query_regularizer_weight=sc.query_regularizer_weight,
    )


def encode(
    model: Any, texts: list[str], query: bool, max_active_dims: int | None = None, batch_size: int = 64
) -> sp.csr_matrix:
    """Term weights as a (texts x vocabulary) CSR matrix."""
    fn = model.encode_query if query else model.encode_document
    t = fn(
        texts,
        batch_size=batch_size,
        convert_to_sparse_tensor=True,
        max_active_dims=max_active_dims,
        show_progress_bar=False,
    )
    t = t.coalesce().cpu()
    rows, cols = t.indices().numpy()
    return sp.csr_matrix((t.values().float().numpy(), (rows, cols)), shape=tuple(t.shape), dtype=np.float32)


def active_terms(m: sp.csr_matrix) -> float:
    """Mean number of non-zero terms per row."""
    return float(m.getnnz(axis=1).mean()) if m.shape[0] else 0.0


def index_bytes(m: sp.csr_matrix) -> int:
    """The postings as held: float32 weights, int32 term ids, row offsets."""
    return int(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes)


def _rerank(q: sp.csr_matrix, q_idx: np.ndarray, d: sp.csr_matrix, d_idx: np.ndarray) -> np.ndarray:
    return np.asarray(q[q_idx].multiply(d[d_idx]).sum(axis=1), np.float64).ravel()


def rerank_scores(model: Any, ds: Dataset, cands: pd.DataFrame, max_active_dims: int | None) -> np.ndarray:
    """The dot product of query and document term weights for every (qid, docid) row of `cands`."""
    return neural.rerank_rows(
        ds, cands, lambda texts, query: encode(model, texts, query, max_active_dims), _rerank
    )


def retrieve(
    model: Any, ds: Dataset, qids: list[str], k: int, max_active_dims: int | None, batch: int = 256
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Exact top-k over the whole corpus by sparse matrix product, and the index's size and sparsity."""
    doc_ids = np.asarray(list(ds.corpus.index), dtype=object)
    docs = encode(model, ds.doc_texts(list(doc_ids)), False, max_active_dims)
    queries = encode(model, ds.queries.loc[qids, "text"].tolist(), True, max_active_dims)
    postings = docs.T.tocsr()  # term -> documents
    k = min(k, len(doc_ids))
    frames = []
    for s in range(0, len(qids), batch):
        sim = (queries[s : s + batch] @ postings).toarray()
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        part = np.take_along_axis(sim, top, axis=1)
        order = np.argsort(-part, axis=1, kind="stable")
        top, part = np.take_along_axis(top, order, axis=1), np.take_along_axis(part, order, axis=1)
        frames.append(
            pd.DataFrame(
                {
                    "qid": np.repeat(qids[s : s + batch], k),
                    "docid": doc_ids[top.ravel()],
                    "score": part.ravel(),
                }
            )
        )
    facts = {
        "index_bytes_per_doc": index_bytes(docs) / len(doc_ids),
        "active_terms_per_doc": active_terms(docs),
        "active_terms_per_query": active_terms(queries),
    }
    return pd.concat(frames, ignore_index=True), facts


def finish(model: Any, ds: Dataset, cands: pd.DataFrame, sc: SparseConfig, folder: Path) -> dict:
    """Test metrics as a reranker of BM25's candidates and as a retriever over the corpus (with its sparsity)."""
    return neural.test_metrics(
        ds,
        cands,
        lambda rows: rerank_scores(model, ds, rows, sc.max_active_dims),
        lambda qids: retrieve(model, ds, qids, sc.retrieve_k, sc.max_active_dims),
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train the SPLADE student (distill/students/neural.py)."""
    from sentence_transformers import SparseEncoderTrainer, SparseEncoderTrainingArguments

    return neural.train(
        cfg,
        neural.Recipe(
            config=SparseConfig.from_cfg,
            build_model=build_model,
            loss=_loss,
            trainer=SparseEncoderTrainer,
            arguments=SparseEncoderTrainingArguments,
            finish=finish,
            loader="distill.students.sparse:load",
        ),
    )


def load(model_dir: Path, ctx: Context) -> list[Scorer]:
    """The student as a reranker (the context's candidate documents encoded once; each call encodes its
    queries) that can also retrieve from the whole corpus."""
    from sentence_transformers import SparseEncoder

    meta = json.loads((model_dir / STUDENT_FILE).read_text())
    top = (meta.get("config") or {}).get("max_active_dims")
    model = SparseEncoder(str(model_dir), device="cpu")
    return [
        neural.candidate_scorer(
            meta["name"],
            ctx,
            lambda texts, query: encode(model, texts, query, top),
            _rerank,
            lambda qids, k: retrieve(model, ctx.ds, qids, k, top),
        )
    ]
