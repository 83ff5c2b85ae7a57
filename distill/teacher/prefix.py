"""Shared-prefix scoring for causal-LM rerankers (Qwen2/Qwen3, Gemma, ...): the candidates of one query share the
chat template, the instruction and the query, so their token sequences share a prefix; only the document and
the closing tokens differ.

For each query's pairs the longest common token prefix (P tokens) is encoded once with the model's own decoder
(`use_cache`); its key/value cache, expanded (not copied) to a batch, then serves every suffix: a batch of
suffixes, right-padded, runs with the prefix in its cache, positions P, P+1, ..., and an attention mask over
prefix and suffix. The score is what sentence-transformers' `LogitScore` reads from the last real token
(logit(true) - logit(false), or logit(true)): the decoder's hidden state there times the two rows of the output
layer (with the model's final logit soft-capping, where it has one), so the whole vocabulary is never projected.
Scores equal `CrossEncoder.predict` up to float rounding (tested within 1e-4 in fp32, with identical rankings).

Written by hand because neither sentence-transformers nor transformers scores many continuations of one cached
prefix in a batch: generation's prefix caching serves one sequence at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from distill.errors import ConfigError


def common_prefix(seqs: list[np.ndarray]) -> int:
    """The length of the longest token prefix every sequence shares, leaving each at least one token of its own
    (the last token is where the score is read, so it must run with the suffix)."""
    shortest = min(len(s) for s in seqs)
    limit = shortest - 1
    if limit <= 0:
        return 0
    first = seqs[0][:limit]
    same = np.ones(limit, dtype=bool)
    for s in seqs[1:]:
        same &= s[:limit] == first
        if not same[0]:
            return 0
    diff = np.flatnonzero(~same)
    return int(diff[0]) if len(diff) else limit


class PrefixScorer:
    """Scores suffixes of a cached prefix with a CrossEncoder's causal LM and its `LogitScore` head."""

    def __init__(self, ce: Any, name: str):
        from sentence_transformers.cross_encoder.modules import LogitScore

        heads = [m for m in ce if isinstance(m, LogitScore)]
        causal = getattr(ce[0], "model", None)
        base = getattr(causal, "model", None)
        out = causal.get_output_embeddings() if causal is not None else None
        if not heads or base is None or out is None:
            raise ConfigError(
                f"teacher.prefix_cache=on: teacher.model={name!r} is not a causal-LM reranker (a decoder with a "
                f"LogitScore head); shared prefixes apply to those only: use teacher.prefix_cache=auto or off"
            )
        head = heads[0]
        assert causal is not None
        self.base, self.config = base, causal.config
        ids = [head.true_token_id] + ([head.false_token_id] if head.false_token_id is not None else [])
        self.rows = out.weight[ids].detach()  # (1 or 2, hidden)
        self.bias = out.bias[ids].detach() if getattr(out, "bias", None) is not None else None
        self.softcap = getattr(causal.config, "final_logit_softcapping", None)
        self.device = out.weight.device

    def prefix(self, ids: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The key/value cache of the prefix `ids`, one (keys, values) pair per layer, batch size 1."""
        x = torch.from_numpy(ids[None, :].astype(np.int64)).to(self.device)
        cache = self.base(input_ids=x, use_cache=True, return_dict=True).past_key_values
        return [(layer.keys, layer.values) for layer in cache.layers]

    def score(
        self, kv: list[tuple[torch.Tensor, torch.Tensor]], suffixes: list[np.ndarray], pad_id: int
    ) -> np.ndarray:
        """fp32 scores of the sequences prefix + each suffix (one batch)."""
        from transformers import DynamicCache

        p = int(kv[0][0].shape[2])
        lens = np.array([len(s) for s in suffixes])
        width = int(lens.max())
        ids = np.full((len(suffixes), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(suffixes), p + width), dtype=np.int64)
        mask[:, :p] = 1
        for row, s in enumerate(suffixes):
            ids[row, : len(s)] = s
            mask[row, p : p + len(s)] = 1
        b = len(suffixes)
        cache = DynamicCache(
            ddp_cache_data=[(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in kv],
            config=self.config,
        )
        dev = self.device
        positions = torch.arange(p, p + width, device=dev)
        hidden = self.base(
            input_ids=torch.from_numpy(ids).to(dev),
            attention_mask=torch.from_numpy(mask).to(dev),
            position_ids=positions.expand(b, -1),
            cache_position=positions,
            past_key_values=cache,
            use_cache=True,
            return_dict=True,
        ).last_hidden_state
        last = hidden[torch.arange(b, device=dev), torch.from_numpy(lens - 1).to(dev)]  # (b, hidden)
        logits = last @ self.rows.T
        if self.bias is not None:
            logits = logits + self.bias
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        scores = logits[:, 0] - logits[:, 1] if logits.shape[1] == 2 else logits[:, 0]
        return scores.float().cpu().numpy()


__all__ = ["PrefixScorer", "common_prefix"]
