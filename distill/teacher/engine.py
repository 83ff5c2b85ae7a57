"""The fast scoring engine: token-budget batches over length-sorted pairs.

What makes it faster than scoring fixed-size batches of pairs (sentence-transformers' `CrossEncoder.predict`),
while computing the same thing (the CrossEncoder's own `preprocess` makes the token ids: prompts, chat templates
and truncation are the folder's; its own modules compute the scores):

- pairs are tokenised once, in chunks, on a background thread while the model scores the previous chunk (the
  first chunk is small, so the model starts early); an encoder's pairs go straight to its Rust tokenizer
  (distill/teacher/pairs.py: each distinct text of a chunk encoded once, each pair assembled in the tokenizer's
  own layout), once a probe has shown that this gives the ids `preprocess` gives; documents kept with
  `keep_documents` (a reranker's index, an evaluation's candidates) are not tokenised again;
- within a chunk, pairs are sorted by their real token length (not character length) and cut into batches by a
  token budget (`batch_tokens` = rows x padded length), so short pairs travel in large batches; a pair joins a
  batch only if it needs little padding (`MAX_PADDING`, on CPU), so padding stays small even for few pairs;
- batches are collated with numpy (padded on the tokenizer's side: left for causal-LM rerankers, so the last
  position is a real token), run under `torch.inference_mode`, optionally in bf16/fp16, or through a static int8
  OpenVINO graph in place of the model's forward (CPU, distill/teacher/int8.py); scores are returned in fp32 in
  the caller's order.

If a batch runs out of memory, the token budget is halved and the batch retried: no pair is lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from distill.errors import ConfigError
from distill.teacher.model import TeacherModel
from distill.teacher.pairs import BackendPairs, probe_pairs
from distill.teacher.prefix import PrefixScorer, common_prefix

log = logging.getLogger(__name__)


@dataclass
class EngineStats:
    pairs: int = 0
    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    seconds: float = 0.0
    oom_retries: int = 0
    prefix_tokens_saved: int = 0  # prefix tokens encoded once instead of once per pair

    @property
    def padding_overhead(self) -> float:
        """Fraction of computed token positions that were padding."""
        return 0.0 if not self.padded_tokens else 1.0 - self.real_tokens / self.padded_tokens

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds if self.seconds else 0.0


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


# On CPU a pair joins a batch only if padding it to the batch's width costs at most this fraction of the width
# (or PAD_SLACK tokens): with few pairs, or lengths spread thinly, a large token budget would otherwise fill
# batches with padding. On a GPU fewer, larger batches pay fewer launches, so there the budget alone cuts.
MAX_PADDING = 0.125
PAD_SLACK = 16


def plan_batches(
    lengths: np.ndarray, batch_tokens: int, max_batch_size: int, max_padding: float = MAX_PADDING
) -> list[np.ndarray]:
    """Indices of `lengths` grouped into batches, longest first, each within `batch_tokens` once padded and each
    holding only pairs at least (1 - max_padding) x its width long (or within PAD_SLACK tokens of it)."""
    order = np.argsort(-lengths, kind="stable")
    sorted_lengths = lengths[order]
    batches = []
    start = 0
    n = len(order)
    while start < n:
        longest = int(sorted_lengths[start])  # sorted descending: the first item sets the padded length
        rows = max(1, min(max_batch_size, batch_tokens // max(longest, 1)))
        shortest = min(longest * (1.0 - max_padding), longest - PAD_SLACK)
        # Of those rows (descending), the ones still long enough; always at least the first.
        rows = int(np.searchsorted(-sorted_lengths[start : start + rows], -shortest, side="right"))
        batches.append(order[start : start + rows])
        start += rows
    return batches


def engine_for(teacher: TeacherModel, t: Any) -> ScoringEngine:
    """The engine with the `teacher.*` options of a config (batch_tokens, prefix_cache, prefix_min_share)."""
    return ScoringEngine(
        teacher,
        batch_tokens=int(t.batch_tokens),
        prefix_cache=str(t.get("prefix_cache", "off")),
        prefix_min_share=float(t.get("prefix_min_share", 0.2)),
    )


class ScoringEngine:
    # Pairs handed to the CrossEncoder's `preprocess` at once (it pads them to a common width).
    PREPROCESS_PAIRS = 512
    # The first chunk's pairs: the model waits for them to be tokenised (on the H200 a whole first chunk of
    # 4,000 pairs was tokenised before the GPU started: docs/results.md), the later chunks overlap the model.
    FIRST_CHUNK = 1024

    def __init__(
        self,
        teacher: TeacherModel,
        *,
        batch_tokens: int = 16384,
        max_batch_size: int = 1024,
        chunk_pairs: int = 8192,
        pad_multiple: int | None = None,
        prefix_cache: str = "off",
        prefix_min_share: float = 0.2,
    ):
        if batch_tokens < 1:
            raise ConfigError(f"teacher.batch_tokens={batch_tokens} must be at least 1")
        if teacher.dtype == "int8" and teacher.graph is None:
            # an int8 teacher is loaded with fp32 weights: scoring before calibration would label fp32 as int8
            raise ConfigError(
                f"{teacher.name}: teacher.dtype=int8 is calibrated on a scoring job's own pairs before it scores "
                f"(`make teacher-score` does it; distill.teacher.int8.calibrate); here use teacher.dtype=fp32 or "
                f"bf16"
            )
        self.teacher = teacher
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size
        self.chunk_pairs = chunk_pairs
        self.pad_multiple = pad_multiple or (8 if teacher.device.type == "cuda" else 1)
        self.max_padding = MAX_PADDING if teacher.device.type == "cpu" else 1.0
        tok = teacher.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self.left_pad = getattr(tok, "padding_side", "right") == "left"
        self.static: dict[str, Any] = {}  # non-tensor features preprocess adds (modality, logits_to_keep)
        # the backend's pair ids (`BackendPairs`), decided by a probe on the first call; None: `preprocess`
        self.backend: BackendPairs | None = None
        self.tokenising = "unprobed"
        self.with_types = False
        self.stats = EngineStats()
        # shared prefixes (distill/teacher/prefix.py): `on` for every causal-LM reranker (refused for encoders),
        # `auto` for causal LMs where a query's pairs share at least `prefix_min_share` of their tokens
        if prefix_cache not in ("auto", "on", "off"):
            raise ConfigError(f"teacher.prefix_cache={prefix_cache!r}: use auto, on or off")
        self.prefix_mode, self.prefix_min_share = prefix_cache, prefix_min_share
        self.prefix: PrefixScorer | None = None
        if prefix_cache == "on" or (prefix_cache == "auto" and teacher.family == "causal_lm"):
            self.prefix = PrefixScorer(teacher.ce, teacher.name)

    # ------------------------------------------------------------------------------------------ tokenising
    def _tokenize(
        self, queries: Sequence[str], docs: Sequence[str]
    ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """Token ids (and token type ids, if the model has them) of each pair, without padding, as the
        CrossEncoder's `preprocess` makes them: through the tokenizer's backend where the first call's probe
        found the same ids (`BackendPairs`), else through `preprocess`."""
        if self.tokenising == "unprobed":
            self._probe(queries, docs)
        if self.backend is not None:
            ids, types = self.backend.encode(queries, docs)
            return ids, (types if self.with_types else None)
        return self._preprocess(queries, docs)

    def keep_documents(self, docs: Sequence[str], queries: Sequence[str]) -> int:
        """Tokenise `docs` now and keep their ids, so that later calls tokenise only their queries and the
        documents not kept: what a production reranker precomputes when it indexes its documents. `queries`
        (any of the workload's) pair with them in the probe when the engine has not tokenised yet. Only on the
        backend's path; returns how many documents are kept (0 through `preprocess`)."""
        if self.tokenising == "unprobed":
            n = min(48, len(docs))
            self._probe([queries[i % len(queries)] for i in range(n)] if queries else [""] * n, docs[:n])
        if self.backend is None:
            return 0
        self.backend.keep(docs)
        return len(self.backend.kept)

    def _probe(self, queries: Sequence[str], docs: Sequence[str]) -> None:
        """Choose how to tokenise: the backend only when it gives `preprocess`'s ids (and token types) on
        `probe_pairs`; `preprocess` sets `self.static` either way."""
        pq, pd_ = probe_pairs(queries, docs, self.teacher.max_length)
        ref_ids, ref_types = self._preprocess(pq, pd_)
        self.with_types = ref_types is not None
        self.tokenising = "preprocess"
        if not BackendPairs.usable(self.teacher):
            return
        try:
            backend = BackendPairs(self.teacher.tokenizer, self.teacher.max_length)
            ids, types = backend.encode(pq, pd_)
        except Exception as e:  # a backend without these calls: preprocess stays
            log.info("%s: tokenising through preprocess (%s)", self.teacher.name, e)
            return
        same = all(np.array_equal(a, b) for a, b in zip(ids, ref_ids, strict=True)) and (
            ref_types is None or all(np.array_equal(a, b) for a, b in zip(types, ref_types, strict=True))
        )
        if same:
            self.backend, self.tokenising = backend, "backend"
        else:
            log.info(
                "%s: its tokenizer's own pairs differ from preprocess's; tokenising through preprocess",
                self.teacher.name,
            )

    def _preprocess(
        self, queries: Sequence[str], docs: Sequence[str]
    ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """The pairs' ids through the CrossEncoder's `preprocess` (padded tensors, unpadded here); the
        non-tensor features it adds are kept in `self.static`."""
        ids: list[np.ndarray] = []
        types: list[np.ndarray] | None = None
        pairs = list(zip(queries, docs, strict=True))
        for s in range(0, len(pairs), self.PREPROCESS_PAIRS):
            feats = self.teacher.ce.preprocess(
                pairs[s : s + self.PREPROCESS_PAIRS], prompt=self.teacher.prompt
            )
            tensors = {k for k, v in feats.items() if torch.is_tensor(v)}
            unknown = tensors - {"input_ids", "attention_mask", "token_type_ids"}
            if unknown:
                raise ConfigError(
                    f"teacher.model={self.teacher.name!r}: its inputs carry {sorted(unknown)}; the scoring "
                    f"engine handles text models only"
                )
            self.static = {k: v for k, v in feats.items() if k not in tensors}
            mask = feats["attention_mask"].numpy().astype(bool)
            lengths = mask.sum(1)
            cuts = np.cumsum(lengths)[:-1]
            ids += np.split(feats["input_ids"].numpy()[mask], cuts)
            if "token_type_ids" in feats:
                types = (types or []) + np.split(feats["token_type_ids"].numpy()[mask], cuts)
        return ids, types

    def chunk_starts(self, n: int) -> list[int]:
        """Where the chunks of `n` pairs start: the first is FIRST_CHUNK pairs at most, so the model starts after
        tokenising that many rather than a whole chunk; the others `chunk_pairs` each."""
        first = min(self.chunk_pairs, self.FIRST_CHUNK)
        return [0, *range(first, n, self.chunk_pairs)] if n else []

    def _chunks(self, queries: Sequence[str], docs: Sequence[str]) -> Iterator[tuple[int, tuple]]:
        """Tokenised chunks; the next chunk is tokenised on a worker thread while the caller scores this one."""
        starts = self.chunk_starts(len(queries))
        if not starts:
            return
        if len(starts) == 1:  # nothing to overlap: no thread (a request's few pairs)
            yield 0, self._tokenize(queries, docs)
            return
        ends = [*starts[1:], len(queries)]
        with ThreadPoolExecutor(max_workers=1) as pool:
            fut = pool.submit(self._tokenize, queries[0 : ends[0]], docs[0 : ends[0]])
            for i, s in enumerate(starts):
                enc = fut.result()
                if i + 1 < len(starts):
                    a, b = starts[i + 1], ends[i + 1]
                    fut = pool.submit(self._tokenize, queries[a:b], docs[a:b])
                yield s, enc

    # ------------------------------------------------------------------------------------------- scoring
    def _collate(
        self, ids: list[np.ndarray], types: list[np.ndarray] | None, idx: np.ndarray
    ) -> dict[str, Any]:
        lens = [len(ids[i]) for i in idx]
        width = -(-max(lens) // self.pad_multiple) * self.pad_multiple
        input_ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        tt = np.zeros((len(idx), width), dtype=np.int64) if types is not None else None
        for row, (i, n) in enumerate(zip(idx, lens, strict=True)):
            cols = slice(width - n, width) if self.left_pad else slice(0, n)
            input_ids[row, cols] = ids[i]
            mask[row, cols] = 1
            if tt is not None and types is not None:
                tt[row, cols] = types[i]
        self.stats.real_tokens += sum(lens)
        self.stats.padded_tokens += input_ids.size
        dev = self.teacher.device
        batch: dict[str, Any] = {
            "input_ids": torch.from_numpy(input_ids).to(dev, non_blocking=True),
            "attention_mask": torch.from_numpy(mask).to(dev, non_blocking=True),
        }
        if tt is not None:
            batch["token_type_ids"] = torch.from_numpy(tt).to(dev, non_blocking=True)
        batch.update(self.static)
        return batch

    def _forward(self, batch: dict[str, Any]) -> np.ndarray:
        out = self.teacher.ce(batch)
        scores = self.teacher.scores_from_output(out["scores"]).cpu().numpy()
        if not np.isfinite(scores).all():
            bad = int((~np.isfinite(scores)).sum())
            hint = (
                " (fp16 overflows on some models: use teacher.dtype=bf16 or fp32)"
                if self.teacher.dtype == "fp16"
                else ""
            )
            raise ConfigError(
                f"the teacher gave {bad} non-finite scores in a batch in {self.teacher.dtype}{hint}"
            )
        return scores

    def _halve_budget(self) -> None:
        """After a batch ran out of memory (the caller has dropped the error, and with it the frames that held the
        batch's tensors): free the GPU's cached blocks and halve the token budget; the caller retries in halves."""
        if self.teacher.device.type == "cuda":
            torch.cuda.empty_cache()
        self.batch_tokens = max(1, self.batch_tokens // 2)
        self.stats.oom_retries += 1

    def _score_indices(self, ids, types, idx: np.ndarray, out: np.ndarray, offset: int) -> None:
        """Score the pairs `idx` of a chunk, halving the token budget on out-of-memory."""
        try:
            batch = self._collate(ids, types, idx)
            out[offset + idx] = self._forward(batch)
            self.stats.batches += 1
        except (RuntimeError, torch.OutOfMemoryError) as e:
            if not _is_oom(e) or len(idx) == 1:
                raise
            del e
            self._halve_budget()
            log.warning(
                "out of memory on a batch of %d pairs: token budget halved to %d", len(idx), self.batch_tokens
            )
            lens = np.array([len(ids[i]) for i in idx])
            half = min(self.max_batch_size, max(1, len(idx) // 2))
            for sub in plan_batches(lens, self.batch_tokens, half, self.max_padding):
                self._score_indices(ids, types, idx[sub], out, offset)

    # ------------------------------------------------------------------------------------ shared prefixes
    def _prefix_groups(
        self, queries: Sequence[str], ids: list[np.ndarray]
    ) -> tuple[list[tuple[np.ndarray, int]], np.ndarray]:
        """(each query's pairs and the prefix they share, where the shared prefix pays) and the other pairs."""
        groups: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault(q, []).append(i)
        shared, rest = [], []
        for idx in groups.values():
            p = common_prefix([ids[i] for i in idx]) if len(idx) > 1 else 0
            share = p / np.mean([len(ids[i]) for i in idx]) if p else 0.0
            if p and (self.prefix_mode == "on" or share >= self.prefix_min_share):
                shared.append((np.asarray(idx), p))
            else:
                rest += idx
        return shared, np.asarray(rest, dtype=np.int64)

    def _score_prefix_group(self, ids: list[np.ndarray], idx: np.ndarray, p: int, out: np.ndarray) -> None:
        """One query's pairs: the prefix encoded once, the suffixes in token-budget batches on its cache."""
        assert self.prefix is not None
        kv = self.prefix.prefix(ids[idx[0]][:p])
        suffix_lens = np.array([len(ids[i]) - p for i in idx])
        self.stats.real_tokens += p + int(suffix_lens.sum())
        self.stats.padded_tokens += p
        self.stats.prefix_tokens_saved += p * (len(idx) - 1)
        for sub in plan_batches(suffix_lens + p, self.batch_tokens, self.max_batch_size, self.max_padding):
            self._score_suffixes(ids, idx[sub], p, kv, out)

    def _score_suffixes(self, ids, idx: np.ndarray, p: int, kv: Any, out: np.ndarray) -> None:
        assert self.prefix is not None
        try:
            out[idx] = self.prefix.score(kv, [ids[i][p:] for i in idx], self.pad_id)
            self.stats.padded_tokens += len(idx) * max(len(ids[i]) - p for i in idx)
            self.stats.batches += 1
        except (RuntimeError, torch.OutOfMemoryError) as e:
            if not _is_oom(e) or len(idx) == 1:
                raise
            del e
            self._halve_budget()
            half = len(idx) // 2
            self._score_suffixes(ids, idx[:half], p, kv, out)
            self._score_suffixes(ids, idx[half:], p, kv, out)

    @torch.inference_mode()
    def score(self, queries: Sequence[str], docs: Sequence[str], progress=None) -> np.ndarray:
        """fp32 scores of (query, doc) pairs, in the given order."""
        if len(queries) != len(docs):
            raise ValueError(f"{len(queries)} queries for {len(docs)} documents")
        t0 = time.perf_counter()
        out = np.empty(len(queries), dtype=np.float32)
        for start, (ids, types) in self._chunks(queries, docs):
            local = np.empty(len(ids), dtype=np.float32)
            todo = np.arange(len(ids))
            if self.prefix is not None:
                shared, todo = self._prefix_groups(queries[start : start + len(ids)], ids)
                for idx, p in shared:
                    self._score_prefix_group(ids, idx, p, local)
                    if progress is not None:
                        progress.update(len(idx))
            lengths = np.fromiter((len(ids[i]) for i in todo), dtype=np.int64, count=len(todo))
            for sub in plan_batches(lengths, self.batch_tokens, self.max_batch_size, self.max_padding):
                self._score_indices(ids, types, todo[sub], local, 0)
                if progress is not None:
                    progress.update(len(sub))
            out[start : start + len(ids)] = local
        self.stats.pairs += len(queries)
        self.stats.seconds += time.perf_counter() - t0
        return out
