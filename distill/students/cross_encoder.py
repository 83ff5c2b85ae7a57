"""Cross-encoder student: a smaller reranker distilled from the teacher's scores ("big reranker -> small one").

`make train-student ARGS="student=cross_encoder student.loss=margin_mse"` trains a sentence-transformers
`CrossEncoder` with `CrossEncoderTrainer` and its own losses on the shared examples:

- `margin_mse`: `MarginMSELoss` (Hofstätter et al., 2020): the positive-negative margins regress on the teacher's;
- `mse`: `MSELoss` on every (query, document) score (Hinton et al.'s regression on logits);
- `listnet`: `ListNetLoss` (Cao et al., 2007): cross-entropy to the softmax of the teacher's scores over the
  example's list;
- `lambdaloss`: `LambdaLoss` (Wang et al., 2018) with the teacher's scores as graded gains.

The student starts from the teacher (default; `layers` keeps its first N transformer layers, as DistilBERT and
TinyBERT start from theirs), from a lexical start of its own, smaller shape (`base_model=lexical`, as the teacher
from scratch starts; `student=cross_encoder_small`) or any CrossEncoder / encoder id or folder (e.g.
../shared/data/all_minilm_l6_v2 on real data: a new 1-logit head). `label_norm=zscore` standardises the
teacher's scores within each list first, so a listwise loss sees the same spread whatever the teacher's scale.
The folder is a plain `CrossEncoder(path)` model: it scores through the project's scoring engine as a reranker,
and can be a cheaper teacher for the other students (`teacher.model=<workspace>/models/cross_encoder/<loss>`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from distill.data.beir import Dataset
from distill.errors import ConfigError
from distill.students import neural
from distill.students.base import Context, FunctionScorer, Scorer, query_texts, student_meta, trained_config
from distill.students.examples import label_list
from distill.students.schema import CrossEncoderStudentConfig
from distill.teacher.schema import TeacherTrainConfig
from distill.workspace import Workspace


def keep_layers(model: Any, n: int | None, which: str = "first") -> int:
    """Keep the first (or last) `n` transformer layers of a Hugging Face encoder in place; returns how many it
    has now."""
    base = model.base_model
    owner = getattr(base, "encoder", base)
    layers = getattr(owner, "layer", None)
    if layers is None:
        layers = getattr(owner, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ConfigError(
            f"student.layers={n}: cannot find the transformer layers of {type(model).__name__}; set student.layers=null"
        )
    if n is not None and n < len(layers):
        kept = list(layers)[:n] if which == "first" else list(layers)[len(layers) - n :]
        setattr(owner, "layer" if hasattr(owner, "layer") else "layers", torch.nn.ModuleList(kept))
        model.config.num_hidden_layers = n
        layers = kept
    return len(layers)


def build_model(
    sc: CrossEncoderStudentConfig,
    ws: Workspace,
    ds: Dataset,
    teacher: Callable[[], str],
    train: TeacherTrainConfig | None = None,
) -> Any:
    """The student to train: the teacher's weights (`teacher`; `layers` of them), a fresh model of its shape
    (`scratch`), a lexical start of the student's own shape (`lexical`, from `train`: teacher.train) or any id or
    folder."""
    if sc.base_model == "lexical":
        with tempfile.TemporaryDirectory(dir=ws.model(sc.name), prefix=".lexical-start-") as start:
            return _open(sc, lexical_start(sc, ws, ds, train or TeacherTrainConfig(), Path(start)))
    model = _open(sc, teacher() if sc.base_model in ("teacher", "scratch") else sc.base_model)
    if sc.base_model == "scratch":  # the teacher's shape and tokenizer, fresh weights
        from transformers import AutoModelForSequenceClassification

        model[0].model = AutoModelForSequenceClassification.from_config(model.model.config).to(model.device)
    keep_layers(model.model, sc.layers, sc.keep)
    return model


def _open(sc: CrossEncoderStudentConfig, path: str | Path) -> Any:
    from sentence_transformers import CrossEncoder

    torch.manual_seed(sc.seed)
    return CrossEncoder(
        str(path),
        num_labels=1,
        max_length=sc.max_length,
        activation_fn=torch.nn.Identity(),
        device=neural.device(),
    )


def lexical_start(
    sc: CrossEncoderStudentConfig, ws: Workspace, ds: Dataset, train: TeacherTrainConfig, dest: Path
) -> Path:
    """`student.base_model=lexical`: the start `make train-teacher` builds for a teacher from scratch (`train`'s
    vocabulary and training lists from the workspace's candidates; lexical_init, so it ranks as an idf-weighted
    exact match before any step), at the student's width, one head and `layers` layers (2 unless set). A small
    student that begins as a lexical ranker learns the teacher's scores in fewer steps than a random one, and its
    width, not the teacher's, sets its cost."""
    from distill.teacher.train import build_lists, build_start

    tc = replace(
        train,
        base_model="scratch",
        init="lexical",
        num_heads=1,
        num_layers=sc.layers or 2,
        hidden_size=sc.hidden_size or train.hidden_size,
        intermediate_size=sc.intermediate_size or train.intermediate_size,
    )
    lists = build_lists(ds, pd.read_parquet(ws.candidates), tc.negatives, tc.seed)
    return build_start(tc, ds, lists, dest)


def _loss(sc: CrossEncoderStudentConfig, model: Any) -> Any:
    from sentence_transformers.cross_encoder import losses

    return {
        "margin_mse": lambda: losses.MarginMSELoss(model),
        "mse": lambda: losses.MSELoss(model),
        "listnet": lambda: losses.ListNetLoss(model),
        "lambdaloss": lambda: losses.LambdaLoss(model),
    }[sc.loss]()


def labels_of(scores: list[float], sc: CrossEncoderStudentConfig) -> list[float]:
    """The example's teacher scores as training labels: standardised within the list when `label_norm=zscore`,
    then divided by `label_scale`."""
    return [x / sc.label_scale for x in label_list(scores, sc.label_norm)]


def dataset(ds: Dataset, ex: pd.DataFrame, sc: CrossEncoderStudentConfig) -> Any:
    """The examples in the shape each loss reads: (query, positive, negative_i; label list) for margin_mse,
    (query, document; score) pairs for mse, (query, [documents]; scores) lists for listnet / lambdaloss."""
    from datasets import Dataset as HFDataset

    queries = ds.queries.loc[ex.qid, "text"].tolist()
    docs = [[p, *n] for p, n in zip(ex.pos, ex.negs, strict=True)]
    labels = [labels_of(s, sc) for s in ex.scores]
    if sc.loss == "mse":
        return HFDataset.from_dict(
            {
                "query": [q for q, d in zip(queries, docs, strict=True) for _ in d],
                "document": ds.doc_texts([x for d in docs for x in d]),
                "label": [x for lab in labels for x in lab],
            }
        )
    if sc.loss in ("listnet", "lambdaloss"):
        return HFDataset.from_dict(
            {"query": queries, "docs": [ds.doc_texts(d) for d in docs], "label": labels}
        )
    cols: dict[str, list] = {"query": queries, "positive": ds.doc_texts(list(ex.pos))}
    for i in range(len(ex.negs.iloc[0])):
        cols[f"negative_{i + 1}"] = ds.doc_texts([n[i] for n in ex.negs])
    cols["label"] = labels
    return HFDataset.from_dict(cols)


def _scorer(model_dir: str, sc: Any, device: str = "auto") -> Any:
    """The student through the project's scoring engine (the same fast path as the teacher)."""
    from distill.teacher.engine import ScoringEngine
    from distill.teacher.model import load_teacher

    return ScoringEngine(load_teacher(model_dir, dtype=sc.dtype, device=device), batch_tokens=sc.batch_tokens)


def score_rows(engine: Any, ds: Dataset, rows: pd.DataFrame) -> np.ndarray:
    qids, q_idx = np.unique(rows.qid.to_numpy(), return_inverse=True)
    texts = np.asarray(query_texts(ds, rows, qids), dtype=object)[q_idx]
    return np.asarray(engine.score(texts.tolist(), ds.doc_texts(list(rows.docid))), np.float64)


def finish(model: Any, ds: Dataset, cands: pd.DataFrame, sc: CrossEncoderStudentConfig, folder: Path) -> dict:
    """Test metrics as a reranker of BM25's candidates (scored from the saved folder, as evaluation will)."""
    engine = _scorer(str(folder), sc)
    return neural.test_metrics(ds, cands, lambda rows: score_rows(engine, ds, rows))


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train the cross-encoder student (distill/students/neural.py)."""
    from sentence_transformers import CrossEncoderTrainer, CrossEncoderTrainingArguments

    return neural.train(
        cfg,
        neural.Recipe(
            config=CrossEncoderStudentConfig.from_cfg,
            build_model=partial(build_model, train=TeacherTrainConfig.from_cfg(cfg.teacher.train)),
            loss=_loss,
            trainer=CrossEncoderTrainer,
            arguments=CrossEncoderTrainingArguments,
            finish=finish,
            dataset=dataset,
        ),
    )


def open_model(model_dir: Path) -> Any:
    """The saved model as a sentence-transformers CrossEncoder on the CPU (what `make export` exports)."""
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(model_dir), device="cpu")


class _Predict:
    """`score(queries, docs)` through `CrossEncoder.predict` (raw logits, as the engine gives): how an adapted
    model (an export's graph behind the CrossEncoder's own tokenising) scores."""

    def __init__(self, model: Any, batch_size: int = 64):
        self.model, self.batch_size = model, batch_size

    def score(self, queries: list[str], docs: list[str]) -> np.ndarray:
        import torch

        return self.model.predict(
            list(zip(queries, docs, strict=True)),
            batch_size=self.batch_size,
            activation_fn=torch.nn.Identity(),
            show_progress_bar=False,
        )


def load(model_dir: Path, ctx: Context) -> list[Scorer]:
    """The student as a reranker through the scoring engine, the documents of the context's candidates tokenised
    once (a production index holds their token ids; each call tokenises its queries), or, when the context
    adapts the model, through `CrossEncoder.predict` on the adapted model."""
    sc: CrossEncoderStudentConfig = trained_config(model_dir, CrossEncoderStudentConfig)
    engine: Any
    if ctx.adapted(model_dir):
        engine = _Predict(ctx.model(model_dir, open_model(model_dir)))
    else:
        engine = _scorer(str(model_dir), sc)
        qids = [q for q in ctx.cands.qid.unique()[:48] if q in ctx.ds.queries.index]
        engine.keep_documents(
            ctx.ds.doc_texts(list(ctx.cands.docid.unique())), ctx.ds.queries.loc[qids, "text"].tolist()
        )
    return [FunctionScorer(student_meta(model_dir)["name"], lambda rows: score_rows(engine, ctx.ds, rows))]
