"""The fast scoring engine: token-budget batches over length-sorted pairs.

What makes it faster than scoring fixed-size batches of pairs (sentence-transformers' `CrossEncoder.predict`):

- pairs are tokenised once, in chunks, on a background thread while the model scores the previous chunk;
- within a chunk, pairs are sorted by their real token length (not character length) and cut into batches by a
  token budget (`batch_tokens` = rows x padded length), so short pairs travel in large batches; a pair joins a
  batch only if it needs little padding (`MAX_PADDING`, on CPU), so padding stays small even for few pairs;
- batches are collated with numpy, run under `torch.inference_mode` with SDPA attention, optionally in
  bf16/fp16 (GPU) or with dynamically quantised int8 linear layers (CPU); scores are returned in fp32 in the
  caller's order.

If a batch runs out of memory, the token budget is halved and the batch retried: no pair is lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from distill.errors import ConfigError
from distill.teacher.model import CrossEncoderModel

log = logging.getLogger(__name__)


@dataclass
class EngineStats:
    pairs: int = 0
    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    seconds: float = 0.0
    oom_retries: int = 0
    budgets: list[int] = field(default_factory=list)

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
# batches with padding (a 4096-token budget padded 22% of 200 benchmark pairs; bf16 went from 1.23x to 1.44x
# CrossEncoder's speed). On a GPU, where fewer larger batches pay fewer launches, it measured -8% to +2% on an
# H100, so there the budget alone cuts (max_padding 1.0).
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


class ScoringEngine:
    def __init__(
        self,
        ce: CrossEncoderModel,
        *,
        batch_tokens: int = 16384,
        max_batch_size: int = 1024,
        chunk_pairs: int = 8192,
        pad_multiple: int | None = None,
    ):
        if batch_tokens < ce.max_length:
            raise ValueError(
                f"teacher.batch_tokens={batch_tokens} must be at least max_length={ce.max_length} "
                f"(one pair of maximal length per batch)"
            )
        self.ce = ce
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size
        self.chunk_pairs = chunk_pairs
        self.pad_multiple = pad_multiple or (8 if ce.device.type == "cuda" else 1)
        self.max_padding = MAX_PADDING if ce.device.type == "cpu" else 1.0
        tok = ce.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self.stats = EngineStats()

    # ------------------------------------------------------------------------------------------ tokenising
    def _tokenize(
        self, queries: Sequence[str], docs: Sequence[str]
    ) -> tuple[list[list[int]], list[list[int]] | None]:
        enc = self.ce.tokenizer(
            list(queries),
            list(docs),
            truncation="longest_first",
            max_length=self.ce.max_length,
            padding=False,
            return_attention_mask=False,
        )
        return enc["input_ids"], enc.get("token_type_ids")

    def _chunks(self, queries: Sequence[str], docs: Sequence[str]) -> Iterator[tuple[int, tuple]]:
        """Tokenised chunks; the next chunk is tokenised on a worker thread while the caller scores this one."""
        starts = list(range(0, len(queries), self.chunk_pairs))
        if not starts:
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            fut = pool.submit(self._tokenize, queries[0 : self.chunk_pairs], docs[0 : self.chunk_pairs])
            for i, s in enumerate(starts):
                enc = fut.result()
                if i + 1 < len(starts):
                    n = starts[i + 1]
                    fut = pool.submit(
                        self._tokenize, queries[n : n + self.chunk_pairs], docs[n : n + self.chunk_pairs]
                    )
                yield s, enc

    # ------------------------------------------------------------------------------------------- scoring
    def _collate(
        self, ids: list[list[int]], types: list[list[int]] | None, idx: np.ndarray
    ) -> dict[str, torch.Tensor]:
        lens = [len(ids[i]) for i in idx]
        width = max(lens)
        width = -(-width // self.pad_multiple) * self.pad_multiple
        input_ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        tt = np.zeros((len(idx), width), dtype=np.int64) if types is not None else None
        for row, (i, n) in enumerate(zip(idx, lens, strict=True)):
            input_ids[row, :n] = ids[i]
            mask[row, :n] = 1
            if tt is not None and types is not None:
                tt[row, :n] = types[i]
        self.stats.real_tokens += sum(lens)
        self.stats.padded_tokens += input_ids.size
        dev = self.ce.device
        batch = {
            "input_ids": torch.from_numpy(input_ids).to(dev, non_blocking=True),
            "attention_mask": torch.from_numpy(mask).to(dev, non_blocking=True),
        }
        if tt is not None:
            batch["token_type_ids"] = torch.from_numpy(tt).to(dev, non_blocking=True)
        return batch

    def _forward(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        out = self.ce.model(**batch)
        logits = out.logits if hasattr(out, "logits") else out[0]
        scores = self.ce.scores_from_logits(logits).cpu().numpy()
        if not np.isfinite(scores).all():
            bad = int((~np.isfinite(scores)).sum())
            hint = (
                " (fp16 overflows on some models: use teacher.dtype=bf16 or fp32)"
                if self.ce.dtype == "fp16"
                else ""
            )
            raise ConfigError(f"the teacher gave {bad} non-finite scores in a batch in {self.ce.dtype}{hint}")
        return scores

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
            if self.ce.device.type == "cuda":
                torch.cuda.empty_cache()
            self.batch_tokens = max(self.ce.max_length, self.batch_tokens // 2)
            self.stats.oom_retries += 1
            self.stats.budgets.append(self.batch_tokens)
            log.warning(
                "out of memory on a batch of %d pairs: token budget halved to %d", len(idx), self.batch_tokens
            )
            lens = np.array([len(ids[i]) for i in idx])
            half = min(self.max_batch_size, max(1, len(idx) // 2))
            for sub in plan_batches(lens, self.batch_tokens, half, self.max_padding):
                self._score_indices(ids, types, idx[sub], out, offset)

    @torch.inference_mode()
    def score(self, queries: Sequence[str], docs: Sequence[str], progress=None) -> np.ndarray:
        """fp32 scores of (query, doc) pairs, in the given order."""
        if len(queries) != len(docs):
            raise ValueError(f"{len(queries)} queries for {len(docs)} documents")
        t0 = time.perf_counter()
        out = np.empty(len(queries), dtype=np.float32)
        for start, (ids, types) in self._chunks(queries, docs):
            lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
            local = np.empty(len(ids), dtype=np.float32)
            for idx in plan_batches(lengths, self.batch_tokens, self.max_batch_size, self.max_padding):
                self._score_indices(ids, types, idx, local, 0)
                if progress is not None:
                    progress.update(len(idx))
            out[start : start + len(ids)] = local
        self.stats.pairs += len(queries)
        self.stats.seconds += time.perf_counter() - t0
        return out
