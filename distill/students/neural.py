"""The training flow every sentence-transformers student shares: examples -> model -> trainer -> model folder.

A neural student module supplies a `Recipe` (how to build its model and loss, which trainer runs it, what it
measures and saves beside the model) and calls `train(cfg, recipe)`. The rest is the same for all of them: the
examples (`distill/students/examples.py`), sentence-transformers' trainer with the project's arguments (DDP
under a launcher, a time limit, tracking), the distillation loss on a fixed probe before and after training
(through the trainer's own evaluation, so the same collator and loss), and a model folder written whole
(`models/<name>/<loss>/`, `student.json`, the test metrics in `distill_train.json`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from distill.data.beir import Dataset
from distill.data.prepare import load_dataset
from distill.distributed import process_ranks
from distill.errors import ConfigError
from distill.hf_training import time_limit_callback, training_args
from distill.ir.metrics import quality
from distill.retrieval.candidates import checked_candidates
from distill.students.base import (
    Context,
    FunctionScorer,
    Search,
    query_texts,
    write_student_json,
    write_trained_queries,
)
from distill.students.examples import examples_for, hf_dataset
from distill.tracking import start_run
from distill.workspace import Workspace, exclusive, staged_dir, write_json_atomic

log = logging.getLogger(__name__)

TRAIN_FILE = "distill_train.json"  # in the model folder: how it was trained and its test metrics
PROBE_SIZE = 64


@dataclass
class Recipe:
    """What differs between neural students."""

    config: Callable[[Any], Any]  # student node -> typed config (e.g. MultiVectorConfig.from_cfg)
    # (typed config, workspace, dataset, the configured teacher's folder or id, resolved on first call) -> a model
    build_model: Callable[[Any, Workspace, Dataset, Callable[[], str]], Any]
    loss: Callable[[Any, Any], Any]  # (typed config, model) -> a sentence-transformers loss
    trainer: Any  # e.g. MultiVectorEncoderTrainer
    arguments: Any  # e.g. MultiVectorEncoderTrainingArguments
    # (model, dataset, candidates, typed config, folder being written) -> test metrics by mode; may write
    # extra files into the folder
    finish: Callable[[Any, Dataset, pd.DataFrame, Any, Path], dict[str, dict[str, float]]]
    # (dataset, examples, typed config) -> the trainer's dataset; default: query, positive, negative_i, label
    dataset: Callable[[Dataset, pd.DataFrame, Any], Any] | None = None


def device() -> str:
    """This process's GPU under a multi-process launch, else the GPU if there is one, else the CPU."""
    d = process_ranks().device("auto")
    return d if d != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")


def teacher_base(cfg: DictConfig, ws: Workspace, student: str) -> Callable[[], str]:
    """The configured teacher (`teacher.model`: the workspace's trained one, a folder or a hub id) as the base of
    a student with base_model teacher | scratch | static, resolved when first asked. A causal-LM reranker has no
    encoder a student can start from: that is one line naming the option to set."""
    from distill.teacher.scoring import resolve_teacher, teacher_names

    def resolve() -> str:
        name = teacher_names(cfg)[0]
        path = resolve_teacher(name, ws)
        from transformers import AutoConfig

        try:
            archs = AutoConfig.from_pretrained(
                path, trust_remote_code=bool(cfg.teacher.trust_remote_code)
            ).architectures
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"student.base_model=teacher: teacher.model={name!r} cannot be opened ({e})"
            ) from e
        if any(str(a).endswith("ForCausalLM") for a in archs or []):
            raise ConfigError(
                f"teacher.model={name!r} is a causal-LM reranker: it has no encoder a {student} student can start "
                f"from; set student.base_model=ID_OR_FOLDER (e.g. ../shared/data/all_minilm_l6_v2)"
            )
        return str(path)

    return resolve


def base_transformer(
    sc: Any, teacher: Callable[[], str], task: str = "feature-extraction", **kwargs: Any
) -> Any:
    """The encoder a student starts from, as sentence-transformers' `Transformer` module: `teacher` (the
    configured teacher's tokenizer and encoder weights), `scratch` (a fresh model of the teacher's shape, seeded)
    or any Hugging Face id / local folder. `task`: feature-extraction (token embeddings) or fill-mask (MLM
    logits, for SPLADE)."""
    from sentence_transformers.base.modules import Transformer

    path = teacher() if sc.base_model in ("teacher", "scratch") else sc.base_model
    module = Transformer(path, transformer_task=task, max_seq_length=sc.max_length, **kwargs)
    if sc.base_model == "scratch":
        from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

        torch.manual_seed(sc.seed)
        auto = AutoModelForMaskedLM if task == "fill-mask" else AutoModel
        module.model = auto.from_config(AutoConfig.from_pretrained(path))
    return module


def own_checkpoint(base: str, model_type: str) -> bool:
    """Whether `base` (id or folder) is already a sentence-transformers model of this kind (or a PyLate one, for
    multi-vector): then it loads whole; any other model (a plain HF encoder, a SentenceTransformer bi-encoder
    such as all-MiniLM-L6-v2, a CrossEncoder) gives only its backbone."""
    from sentence_transformers.util import load_file_path

    if base in ("teacher", "scratch", "static"):
        return False
    found = load_file_path(base, "config_sentence_transformers.json")
    if found and json.loads(Path(found).read_text()).get("model_type") == model_type:
        return True
    modules = load_file_path(base, "modules.json") if model_type == "MultiVectorEncoder" else None
    return modules is not None and "pylate" in Path(modules).read_text()


def run_name(sc: Any) -> str:
    """The ranker's name in metrics.json: the config's name and its loss (bi_encoder_kl, sparse_margin_mse)."""
    return f"{sc.name}_{sc.loss}"


def train(cfg: DictConfig, recipe: Recipe) -> dict[str, Any]:
    """Build the examples, train with the recipe's trainer (DDP under a launcher), save, measure, report."""
    sc = recipe.config(cfg.student)
    ws = Workspace.from_cfg(cfg)
    ranks = process_ranks()
    ds = load_dataset(cfg)
    checked_candidates(cfg, ws, ds)
    torch.manual_seed(sc.seed)
    out = ws.model(sc.name) / sc.loss
    with exclusive(out, f"training {run_name(sc)}") if ranks.is_main else contextlib.nullcontext():
        return _train(cfg, recipe, sc, ws, ranks, ds, out)


def _train(
    cfg: DictConfig, recipe: Recipe, sc: Any, ws: Workspace, ranks: Any, ds: Dataset, out: Path
) -> dict[str, Any]:
    ex, skipped, offered = examples_for(sc, ws, ds)
    name = run_name(sc)
    t0 = time.perf_counter()
    model = recipe.build_model(sc, ws, ds, teacher_base(cfg, ws, sc.name))
    report_cut(
        getattr(model, "tokenizer", None),
        ds.doc_texts(list(dict.fromkeys(ex.pos))[:CUT_SAMPLE]),
        sc.max_length,
    )
    args = training_args(
        recipe.arguments,
        cfg,
        f"{sc.name}-{sc.loss}",
        epochs=sc.epochs,
        batch_size=sc.batch_size,
        lr=sc.lr,
        warmup_ratio=sc.warmup_ratio,
        seed=sc.seed,
        workspace=ws,
    )
    limit = time_limit_callback(sc.max_seconds, "student.max_seconds")
    with start_run(cfg, stage=f"train-student-{sc.name}-{sc.loss}") as tracker:
        train_ds = recipe.dataset(ds, ex, sc) if recipe.dataset else hf_dataset(ds, ex, sc.label_norm)
        trainer = recipe.trainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            loss=recipe.loss(sc, model),
            callbacks=[limit],
        )
        probe = train_ds.select(range(min(PROBE_SIZE, len(train_ds))))
        loss_before = probe_loss(trainer, probe)
        result = trainer.train()
        seconds = time.perf_counter() - t0
        schedule, cut_note = limit.schedule()
        # on every rank: the trainer's evaluation is collective under DDP
        loss_after = probe_loss(trainer, probe)
        if not ranks.is_main:  # rank 0 saves, evaluates and reports
            return {"rank": ranks.rank, "steps": result.global_step}
        facts = {
            "loss": sc.loss,
            "base_model": sc.base_model,
            "started_from": teacher_base(cfg, ws, sc.name)()
            if sc.base_model in ("teacher", "scratch", "static")
            else sc.base_model,
            "examples": len(ex),
            "skipped": skipped,
            "steps": result.global_step,
            **schedule,
            "train_loss": result.training_loss,
            "probe_loss_before": loss_before,
            "probe_loss_after": loss_after,
            "train_seconds": round(seconds, 1),
            "processes": ranks.world,
        }
        cands = pd.read_parquet(ws.candidates)
        with staged_dir(out) as tmp:  # a crash leaves the previous folder as it was
            model.save(str(tmp))
            info = {**facts, "test": recipe.finish(model, ds, cands, sc, tmp)}
            write_json_atomic(info, tmp / TRAIN_FILE)
            write_trained_queries(tmp, offered)
            write_student_json(tmp, name=name, ws=ws, config=cfg.student)
        tracker.summary(
            {f"test/{mode}/{k}": v for mode, m in info["test"].items() for k, v in m.items()}
            | {"train/seconds": seconds, "train/loss": result.training_loss}
        )
        tracker.artifact(out, type="model", name=f"{sc.name}-{sc.loss}")
    modes = ", ".join(f"{mode} {m['ndcg@10']:.4f}" for mode, m in info["test"].items() if "ndcg@10" in m)
    print(
        f"train-student {name}: {len(ex)} examples, {result.global_step} steps in {seconds:.0f}s{cut_note}; "
        f"test nDCG@10: {modes} -> {out}"
    )
    return info


def test_metrics(
    ds: Dataset,
    cands: pd.DataFrame,
    rerank: Callable[[pd.DataFrame], np.ndarray],
    retrieve: Callable[[list[str]], tuple[pd.DataFrame, dict[str, float]]] | None = None,
) -> dict[str, dict[str, float]]:
    """A student's test metrics: as a reranker of the test split's candidates, and as a retriever over the corpus
    (with the facts its search reports, e.g. index bytes per document) when it has one."""
    test = cands[cands.split == "test"]
    qrels = ds.qrels["test"]
    out = {"rerank": quality(qrels, test[["qid", "docid"]].assign(score=rerank(test)))}
    if retrieve is not None:
        run, facts = retrieve(sorted(set(qrels.qid) & set(ds.queries.index)))
        out["retrieve"] = quality(qrels, run) | facts
    return out


PairScores = Callable[[Any, np.ndarray, Any, np.ndarray], np.ndarray]


def rerank_rows(
    ds: Dataset, rows: pd.DataFrame, encode: Callable[[list[str], bool], Any], pair_scores: PairScores
) -> np.ndarray:
    """Scores of (qid, docid) rows, each distinct query and document encoded once (`encode(texts, is_query)`)
    and scored by `pair_scores(queries, query_row_of_each_pair, documents, document_row_of_each_pair)`."""
    qids, q_idx = np.unique(rows.qid.to_numpy(), return_inverse=True)
    dids, d_idx = np.unique(rows.docid.to_numpy(), return_inverse=True)
    q = encode(ds.queries.loc[qids, "text"].tolist(), True)
    return pair_scores(q, q_idx, encode(ds.doc_texts(list(dids)), False), d_idx)


def candidate_scorer(
    name: str,
    ctx: Context,
    encode: Callable[[list[str], bool], Any],
    pair_scores: PairScores,
    search: Search | None = None,
) -> FunctionScorer:
    """A scorer for representation students: the context's candidate documents are encoded once (as an index
    holds them), each call encodes its queries and scores its rows (`encode`, `pair_scores` as in
    `rerank_rows`)."""
    dids = ctx.cands.docid.unique()
    docs = encode(ctx.ds.doc_texts(list(dids)), False)
    row_of = pd.Series(np.arange(len(dids)), index=dids)

    def score(rows: pd.DataFrame) -> np.ndarray:
        qids, q_idx = np.unique(rows.qid.to_numpy(), return_inverse=True)
        q = encode(query_texts(ctx.ds, rows, qids), True)
        return pair_scores(q, q_idx, docs, row_of.loc[rows.docid.to_numpy()].to_numpy())

    return FunctionScorer(name, score, search)


# how many of the training documents `report_cut` reads
CUT_SAMPLE = 1000


def report_cut(tokenizer: Any, texts: list[str], max_length: int) -> float:
    """Log the share of `texts` that `max_length` cuts (longer with the tokenizer's special tokens): a student's
    max_length sized for one corpus (the sparse student's 48 tokens cut about half of the sample world's
    documents) shows what it cuts on another. Returns the share (0 for a tokenizer that is not a transformers
    one, e.g. a static embedding's, which has no max_length)."""
    if not texts or not callable(tokenizer):
        return 0.0
    ids = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    share = float(np.mean([len(i) > max_length for i in ids]))
    log.info(
        "student.max_length=%d cuts %.0f%% of %d training documents (raise it to keep more of each)",
        max_length,
        100 * share,
        len(texts),
    )
    return share


def probe_loss(trainer: Any, probe: Any) -> float:
    """The distillation loss on a fixed set of examples, through the trainer's own collator and loss."""
    return float(trainer.evaluate(eval_dataset=probe, metric_key_prefix="probe")["probe_loss"])
