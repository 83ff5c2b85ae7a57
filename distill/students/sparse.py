"""Learned-sparse student (SPLADE: Formal et al., SIGIR 2021; SPLADE v2, 2021): a weight per vocabulary term.

`make train-student ARGS="student=sparse student.loss=kl"` (or `margin_mse`) trains a sentence-transformers
`SparseEncoder` (an MLM encoder + `SpladePooling`: the sum (SPLADE v1) or max (v2) over tokens of
log(1 + relu(MLM logits))) with `SparseEncoderTrainer` and `SpladeLoss`, which wraps the distillation loss
(`SparseDistillKLDivLoss` or `SparseMarginMSELoss`) with the FLOPS regulariser on queries and documents (Paria et
al., ICLR 2020) that makes the vectors sparse. The student starts from the teacher's encoder (its MLM head is new:
the teacher never had one, and is first fitted to give each token its IDF: `lexical_head`), a fresh model of its
shape, or any id / folder (a SparseEncoder checkpoint loads whole; any other encoder gets an MLM head). The
teacher's scores are standardised within each list by default (`label_norm=zscore`). `expansion_gradient` > 0 lets
terms below 0 learn in training (`let_terms_expand`), so that distillation can add terms a text lacks.

The folder is a plain `SparseEncoder(path)` model. Retrieval is a sparse matrix product against the documents'
term weights (scipy CSR: the inverted index's postings in matrix form), exact, and sparse in both sides, so it
scales like an inverted index; beyond one machine's memory, load the vectors into an inverted-index engine
(e.g. Lucene/OpenSearch's neural-sparse, Seismic, or PISA with quantised weights).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from scipy import sparse as sp

from distill.data.beir import Dataset
from distill.ir.bm25 import pair_dots
from distill.students import neural
from distill.students.base import Context, Scorer, student_meta, trained_config
from distill.students.schema import SparseConfig
from distill.teacher.soft_labels import read_soft_labels
from distill.workspace import Workspace

# The IDF-weighted start gives the median term this weight (its logit: e^2.5 - 1 = 11.2), and the loss sees the
# scores divided by their spread over the labels'. On the sample world this start gained nDCG under distillation,
# where a start scaled to the labels' own spread (median weight ~1.5) lost it (docs/results.md).
START_WEIGHT = 2.5
# the train queries (their top `negative_depth` candidates) on which the start's and the labels' spread are measured
SPREAD_QUERIES = 200


def build_model(sc: SparseConfig, ws: Workspace, ds: Dataset, teacher: Callable[[], str]) -> Any:
    """A SparseEncoder checkpoint loaded whole, or an encoder with an MLM head started lexical (`lexical_head`);
    with `expansion_gradient` > 0 its pooling trains with a leaky gradient (`let_terms_expand`)."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    if neural.own_checkpoint(sc.base_model, "SparseEncoder"):
        model = SparseEncoder(sc.base_model, device=neural.device())
    else:
        model = _new_model(sc, ws, ds, teacher)
    if sc.expansion_gradient > 0 and isinstance(model[-1], SpladePooling):
        let_terms_expand(model[-1], sc.expansion_gradient)
    return model


def _new_model(sc: SparseConfig, ws: Workspace, ds: Dataset, teacher: Callable[[], str]) -> Any:
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    mlm = neural.base_transformer(sc, teacher, task="fill-mask")
    scale = 1.0
    if sc.head_init_steps:
        cands = pd.read_parquet(
            ws.require(ws.candidates, "candidates"), columns=["qid", "docid", "rank", "split"]
        )
        train = cands[cands.split == "train"]
        docs = ds.doc_texts(list(ds.corpus.index))
        weights = idf(mlm.tokenizer, docs, sc.max_length, mlm.model.get_output_embeddings().out_features)
        weights *= START_WEIGHT / np.median(weights[weights > 0])
        # the train queries' texts (never their labels) help start the head too
        texts = [docs, ds.queries.loc[sorted(set(train.qid)), "text"].tolist()]
        lexical_head(mlm.model, mlm.tokenizer, texts, weights, sc.head_init_steps, sc.max_length, sc.seed)
    pooling = SpladePooling(pooling_strategy="sum" if sc.pooling == "sum" else "max")
    model = SparseEncoder(modules=[mlm, pooling], device=neural.device())
    if sc.head_init_steps:
        lists = train[train["rank"] <= sc.negative_depth]
        lists = lists[lists.qid.isin(sorted(set(lists.qid))[:SPREAD_QUERIES])]
        scale = start_spread(model, ds, lists) / label_spread(ws, sc, lists)
    model.__dict__["distill_score_scale"] = scale  # read by _loss (a plain float attribute)
    return model


class LeakyGradReLU(torch.autograd.Function):
    """relu(x) forward; backward, the gradient below 0 is `slope` times the incoming one instead of 0 (a
    straight-through estimator, Bengio et al., 2013, with a leaky slope). Written here because no library
    offers a ReLU whose forward stays exact while its gradient leaks."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, slope: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.slope = slope
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return torch.where(x > 0, grad, grad * ctx.slope), None


def let_terms_expand(pooling: Any, slope: float) -> None:
    """Make a `SpladePooling` train with `LeakyGradReLU`, so that a term no position activates still learns
    whether it should be on: with max pooling its gradient reaches the position with its highest logit (max over
    positions of log(1 + relu(logit)) is log(1 + relu(max logit))), with sum pooling every position. The vectors
    are unchanged; evaluation and the saved model use the plain module (the override lives on this instance
    only and is not saved)."""
    plain = type(pooling).forward

    def forward(features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not pooling.training or "cu_seq_lens_q" in features:
            return plain(pooling, features)
        logits = features["token_embeddings"]
        real = features["attention_mask"].bool()[..., None]
        if pooling.pooling_strategy == "max":
            top = logits.masked_fill(~real, float("-inf")).amax(dim=1)
            pooled = torch.log1p(LeakyGradReLU.apply(top, slope))
        else:
            pooled = (torch.log1p(LeakyGradReLU.apply(logits, slope)) * real).sum(dim=1)
        features["sentence_embedding"] = pooled
        return features

    pooling.forward = forward


def idf(tokenizer: Any, docs: list[str], max_length: int, vocab: int) -> np.ndarray:
    """Each vocabulary term's inverse document frequency over `docs` as the model reads them (its tokens,
    truncated at `max_length`), BM25's form log(1 + (N - n + 0.5) / (n + 0.5)); 0 for special tokens."""
    n_docs = np.zeros(vocab, np.float64)
    for start in range(0, len(docs), 4096):
        for ids in tokenizer(docs[start : start + 4096], add_special_tokens=False, truncation=True,
                             max_length=max_length)["input_ids"]:  # fmt: skip
            n_docs[np.unique(ids)] += 1
    out = np.log1p((len(docs) - n_docs + 0.5) / (n_docs + 0.5))
    out[[i for i in tokenizer.all_special_ids if i < vocab]] = 0.0
    return out


def start_spread(model: Any, ds: Dataset, lists: pd.DataFrame) -> float:
    """How widely the started model's scores spread: the median, over the queries of `lists` (qid, docid), of the
    standard deviation of the dot products of its own query and document encodings (`encode`) within the query's
    rows. Measured on the model, not worked out from the IDF weights `lexical_head` teaches it: the model's weights
    come out larger and it switches on related terms too. On the sample world (version 4) the taught weights
    spread 2.5 and the model 53.8; from the 2.5 the loss saw scores 20 times sharper than the labels, began at 18
    instead of about 0.6, and a quarter epoch of distillation lowered test nDCG@10 (docs/results.md)."""
    return median_spread(rerank_scores(model, ds, lists, None), lists.qid.to_numpy())


def median_spread(scores: Any, qids: np.ndarray) -> float:
    """The median over queries of the scores' standard deviation within each query's rows (1 when that is 0)."""
    spread = float(pd.Series(np.asarray(scores)).groupby(qids).std().median())
    return spread if spread > 0 else 1.0


def label_spread(ws: Workspace, sc: SparseConfig, lists: pd.DataFrame) -> float:
    """How widely the labels spread within a list: 1 for zscore labels, else the teacher's median standard
    deviation over the candidates of the queries in `lists`."""
    if sc.label_norm == "zscore":
        return 1.0
    soft = read_soft_labels(ws.require(ws.soft_labels, "teacher-score"), ws.candidates, lists.qid.unique())
    return median_spread(soft.score.to_numpy(), soft.qid.to_numpy())


def scaled_dot(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """Row-wise dot product divided by `scale` (the training loss's view of the student's scores)."""
    from sentence_transformers.util import pairwise_dot_score

    return pairwise_dot_score(a, b) / scale


def lexical_head(
    model: Any,
    tokenizer: Any,
    texts: list[list[str]],
    weights: np.ndarray,
    steps: int,
    max_length: int,
    seed: int,
    margin: float = 1.0,
) -> None:
    """Start a new MLM head lexical and IDF-weighted, training it alone (the encoder frozen) in two phases:
    1. give back each position's own token (cross-entropy over the vocabulary), so its logit stands out;
    2. after lowering the bias until almost every other term's logit is below -`margin`, fit each position's
       own-token logit to exp(w) - 1 (so SPLADE's log(1 + relu(.)) gives the token its weight w in `weights`,
       its IDF, scaled) while keeping the other terms below -`margin`.
    Special tokens ([CLS], [SEP], ...) are switched off for good (bias -1e4). The student then starts as an
    IDF-weighted bag of its text's own words, the lexical prior an MLM-pretrained SPLADE starts from (Formal et
    al., 2021), which distillation re-weights. Through the plain ReLU it learns no expansion terms from this start
    (a term below 0 gets no gradient; an MLM-pretrained head, whose related terms start active, can); with
    `let_terms_expand` it can.
    `texts`: groups of texts (e.g. documents and queries, whose short contexts give other hidden states), each
    batch drawn from every group equally.

    Written here because an encoder trained as a cross-encoder (the teacher) has no MLM head: a random one makes
    SPLADE start dense and unrelated to the text, and special tokens present in every text add a per-document
    offset that swamps the ranking."""
    prefix = model.base_model_prefix
    head = [p for n, p in model.named_parameters() if not n.startswith(prefix)]
    frozen = [p for n, p in model.named_parameters() if n.startswith(prefix)]
    bias = model.get_output_embeddings().bias
    if bias is None or not head:
        return
    target = torch.as_tensor(np.expm1(weights), dtype=torch.float32, device=model.device)
    rng = np.random.default_rng(seed)
    for p in frozen:
        p.requires_grad_(False)
    was_training = model.training
    model.train()

    def positions(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Head logits at the real positions of n sampled texts, and each position's own token id (-1 at special
        tokens' positions, where no term should activate: SPLADE pools over them too)."""
        each = max(1, n // len(texts))
        chosen = [g[i] for g in texts for i in rng.choice(len(g), size=min(each, len(g)), replace=False)]
        enc = tokenizer(chosen, padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                        return_special_tokens_mask=True)  # fmt: skip
        special = enc.pop("special_tokens_mask").bool().to(model.device)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        real = enc["attention_mask"].bool()
        return model(**enc).logits[real], enc["input_ids"].masked_fill(special, -1)[real]

    def own_mask(logits: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(logits, dtype=torch.bool).scatter(
            1, own.clamp(min=0)[:, None], (own >= 0)[:, None]
        )

    def fit(loss_of: Any) -> None:
        opt = torch.optim.Adam(head, lr=3e-3)
        for _ in range(steps):
            loss = loss_of(*positions(32))
            opt.zero_grad()
            loss.backward()
            opt.step()

    fit(lambda logits, own: torch.nn.functional.cross_entropy(logits, own, ignore_index=-1))
    with torch.no_grad():
        logits, own = positions(64)
        others = logits.masked_fill(own_mask(logits, own), float("-inf")).max(dim=1).values
        bias -= torch.quantile(others.float(), 0.99) + margin

    def weighted(logits: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        above = torch.nn.functional.relu(logits + margin).masked_fill(own_mask(logits, own), 0.0)
        word = own >= 0
        z = logits[word].gather(1, own[word][:, None])[:, 0]
        # a token whose logit falls below 0 drops out of its text for good (no gradient through the ReLU):
        # falling under half its target costs more than missing it above
        under = torch.nn.functional.relu(target[own[word]] / 2 - z)
        fitted = torch.nn.functional.mse_loss(z, target[own[word]]) + 10 * under.pow(2).mean()
        return fitted + above.pow(2).sum(dim=1).mean()

    fit(weighted)
    for p in frozen:
        p.requires_grad_(True)
    model.train(was_training)
    with torch.no_grad():
        bias[[i for i in tokenizer.all_special_ids if i < bias.numel()]] = -1e4


def _loss(sc: SparseConfig, model: Any) -> Any:
    from sentence_transformers.sparse_encoder import losses

    # The start's scores spread `scale` times as widely as the labels (its weights are large, so that their logits
    # sit far above 0); the loss sees them divided by it, which leaves the ranking as it is.
    sim = partial(scaled_dot, scale=getattr(model, "distill_score_scale", 1.0))
    inner = (
        losses.SparseMarginMSELoss(model, similarity_fct=sim)
        if sc.loss == "margin_mse"
        else losses.SparseDistillKLDivLoss(model, similarity_fct=sim, temperature=sc.temperature)
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
    return pair_dots(q, d, q_idx, d_idx)


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
        ),
    )


def open_model(model_dir: Path) -> Any:
    """The saved model, on the CPU (what `load` scores with and `make export` exports)."""
    from sentence_transformers import SparseEncoder

    return SparseEncoder(str(model_dir), device="cpu")


def load(model_dir: Path, ctx: Context) -> list[Scorer]:
    """The student as a reranker (the context's candidate documents encoded once; each call encodes its
    queries) that can also retrieve from the whole corpus."""
    sc: SparseConfig = trained_config(model_dir, SparseConfig)
    top = sc.max_active_dims
    model = ctx.model(model_dir, open_model(model_dir))
    return [
        neural.candidate_scorer(
            student_meta(model_dir)["name"],
            ctx,
            lambda texts, query: encode(model, texts, query, top),
            _rerank,
            lambda qids, k: retrieve(model, ctx.ds, qids, k, top),
        )
    ]
