"""The rankers present in a workspace, each with its scores on a split's candidates and a latency probe.

Latency is the median wall time to score one query's top `n` BM25 candidates, on this machine, with what a
production reranker would have precomputed excluded: GBDT features are read from `features.parquet`, the
bi-encoder's document embeddings are computed once (it encodes only the query at request time), and the
cross-encoders' (the teacher's and a cross-encoder student's) document token ids are computed once (they tokenise
only the query). The teacher runs through the project's scoring engine with the run's `teacher.*` settings.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from distill.data.beir import Dataset
from distill.export.stage import export_scorers
from distill.students.base import Context, Search, load_scorers, student_dirs
from distill.teacher.soft_labels import read_soft_labels
from distill.workspace import Workspace

log = logging.getLogger(__name__)

Probe = Callable[[pd.DataFrame], object]  # scores one query's candidate rows


@dataclass
class Ranker:
    name: str
    kind: str  # retrieval | teacher | student
    scores: np.ndarray  # aligned with the split's candidate rows
    probe: Probe | None = None
    search: Search | None = None  # students that also retrieve from the whole corpus


def find_rankers(cfg: DictConfig, ds: Dataset, ws: Workspace, cands: pd.DataFrame) -> list[Ranker]:
    """BM25, the teacher (soft labels), every student of the workspace (each `models/**/student.json`, loaded
    through the loader it names: evaluation knows no student by name) and every current export of one
    (`NAME@TAG`, distill/export)."""
    rankers = [Ranker("bm25", "retrieval", cands.bm25.to_numpy(np.float64))]
    if cfg.evaluate.lexical_baselines:
        rankers += subword_bm25(cfg, ds, ws, cands)
    if (ws.soft_labels / "manifest.json").exists():
        soft = read_soft_labels(ws.soft_labels, ws.candidates, cands.qid.unique())
        t = cands[["qid", "docid"]].merge(soft[["qid", "docid", "score"]], on=["qid", "docid"], how="left")
        if t.score.isna().any():
            raise_missing(int(t.score.isna().sum()))
        rankers.append(
            Ranker("teacher", "teacher", t.score.to_numpy(np.float64), _teacher_probe(cfg, ds, ws, cands))
        )
    ctx = Context.of(cfg, ds, ws, cands)
    scorers = [s for model_dir in student_dirs(ws) for s in load_scorers(model_dir, ctx)]
    for scorer in [*scorers, *export_scorers(ctx)]:
        rankers.append(
            Ranker(
                scorer.name,
                "student",
                scorer.score(cands).astype(np.float64),
                scorer.score,
                getattr(scorer, "search", None),
            )
        )
    return rankers


def subword_bm25(cfg: DictConfig, ds: Dataset, ws: Workspace, cands: pd.DataFrame) -> list[Ranker]:
    """BM25 over the teacher's own sub-word tokens (ranker `bm25_wordpiece`: WordPiece for BERT-style teachers,
    the tokenizer's pieces for others), with the retrieval's k1 and b, on the candidates: a lexical baseline
    that reads the tokens the teacher reads, so the report shows how far the teacher and each student rise
    above lexical matching with them, not only above BM25 over words. Left out, with one line, when the
    teacher's tokenizer is not available here (soft labels imported from elsewhere).

    The words a from-scratch teacher's vocabulary took from the training queries (its `translation.json`) are
    split here as the corpus's vocabulary splits them: as whole tokens they would hide the stem a query word
    shares with a document word, and the baseline would be weaker than the corpus's own sub-words make it."""
    from tokenizers import models
    from transformers import AutoTokenizer

    from distill.ir.bm25 import BM25Index
    from distill.teacher.scoring import resolve_teacher
    from distill.teacher.train import TRANSLATION_FILE

    t = cfg.teacher
    try:
        folder = resolve_teacher(str(t.model), ws)
        tok = AutoTokenizer.from_pretrained(
            folder, revision=t.revision, trust_remote_code=bool(t.trust_remote_code)
        )
    except Exception as e:  # no trained teacher, a hub id with no cached copy and no network
        log.warning("ranker bm25_wordpiece left out: the teacher's tokenizer is not available here (%s)", e)
        return []
    if not getattr(tok, "is_fast", False):  # a Python-only tokenizer (no translation record: not built here)

        def pieces(texts: Sequence[str]) -> list[list[str]]:
            ids = tok(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
            return [list(tok.convert_ids_to_tokens(row)) for row in ids]

    else:
        # whole texts, as BM25 reads them (a tokenizer file may carry the model's truncation)
        backend = copy.deepcopy(tok.backend_tokenizer)
        backend.no_truncation()
        backend.no_padding()
        record = Path(folder) / TRANSLATION_FILE
        if record.is_file():
            vocab = backend.get_vocab()
            for word in json.loads(record.read_text())["words"]:
                vocab.pop(word, None)
            backend.model = models.WordPiece(vocab, unk_token=str(tok.unk_token))

        def pieces(texts: Sequence[str]) -> list[list[str]]:
            return [e.tokens for e in backend.encode_batch(list(texts), add_special_tokens=False)]

    rc = cfg.retrieval
    index = BM25Index(
        ds.doc_texts(ds.corpus.index), k1=rc.k1, b=rc.b, method=rc.method, tokenizer=pieces, pairs_only=True
    )
    qids = pd.Index(cands.qid.unique())
    scores = index.score_pairs(
        ds.queries.loc[qids, "text"].tolist(),
        qids.get_indexer(cands.qid),
        ds.doc_positions(cands.docid),
    )
    return [Ranker("bm25_wordpiece", "retrieval", scores.astype(np.float64))]


def raise_missing(n: int) -> None:
    from distill.errors import StageNotReadyError

    raise StageNotReadyError(
        f"{n} candidates have no teacher score: the soft labels are older than candidates.parquet; "
        f"re-run `make teacher-score ARGS=teacher.overwrite=true`"
    )


def _teacher_probe(cfg: DictConfig, ds: Dataset, ws: Workspace, cands: pd.DataFrame) -> Probe | None:
    """The teacher's latency probe: one query's candidates through the scoring engine, the candidates'
    documents tokenised beforehand (`keep_documents`)."""
    from distill.teacher.engine import engine_for
    from distill.teacher.scoring import load_configured_teacher, resolve_teacher

    try:
        ce = load_configured_teacher(cfg, resolve_teacher(cfg.teacher.model, ws), cfg.teacher.device)
        engine = engine_for(ce, cfg.teacher)
    except Exception as e:  # the soft labels may come from a teacher that is not available here (or int8)
        import logging

        logging.getLogger(__name__).warning("teacher latency not measured: %s", e)
        return None
    qtext = ds.queries["text"]
    engine.keep_documents(ds.doc_texts(list(cands.docid.unique())), qtext.loc[cands.qid.unique()].tolist())

    def probe(rows: pd.DataFrame) -> object:
        return engine.score([qtext[rows.qid.iloc[0]]] * len(rows), ds.doc_texts(list(rows.docid)))

    return probe
