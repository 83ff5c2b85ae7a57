"""Seeded synthetic rerankers of real shapes, built locally (nothing is downloaded): what the benchmarks measure
and the tests score, where a real checkpoint cannot be fetched.

- `build_random_minilm`: the MiniLM-L6 cross-encoder shape with random weights (costs what the real one costs);
- `build_real_minilm`: a pretrained encoder with a fitted 1-logit head (scores that spread like a reranker's);
- `build_llm_reranker`: a causal-LM reranker of Qwen3-Reranker-0.6B's shape (or smaller, via `shape`), with its
  chat template (`RERANKER_TEMPLATE`) and a byte-level BPE tokenizer trained on the given texts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from distill.data.convert import read_flagembedding


def build_random_minilm(dest: Path, src: Path, seed: int = 0) -> Path:
    """A cross-encoder of the MiniLM-L6 shape (`src`: a folder with its config and tokenizer, e.g. the shared
    minilm_l6_cross_encoder_config) with seeded random weights: it costs what the real model costs."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification  # type: ignore[attr-defined]

    torch.manual_seed(seed)
    BertForSequenceClassification(BertConfig.from_pretrained(src)).save_pretrained(dest)
    AutoTokenizer.from_pretrained(src).save_pretrained(dest)
    return dest


def build_real_minilm(
    dest: Path, encoder: Path, examples: Path, seed: int = 0, steps: int = 300, lr: float = 1e-2
) -> Path:
    """A cross-encoder of REAL weights: a pretrained encoder (`encoder`, e.g. the shared all-MiniLM-L6-v2) with a
    1-logit head fitted (encoder frozen, `steps` seeded full-batch Adam steps of class-balanced logistic loss)
    on FlagEmbedding examples' positives against their negatives (`examples`, e.g. the shared MS MARCO sample),
    so that its scores spread and rank like a trained reranker's; precision is judged on it, not on random
    weights whose scores barely spread."""
    from transformers import AutoTokenizer, BertForSequenceClassification  # type: ignore[attr-defined]

    src = encoder
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(src)
    model = BertForSequenceClassification.from_pretrained(src, num_labels=1).eval()
    rows = read_flagembedding(examples)
    pairs = [(r["query"], p, 1.0) for r in rows for p in r["pos"]] + [
        (r["query"], n, 0.0) for r in rows for n in r["neg"]
    ]
    feats = []
    with torch.inference_mode():
        for i in range(0, len(pairs), 64):
            b = pairs[i : i + 64]
            enc = tok([q for q, _, _ in b], [d for _, d, _ in b], truncation=True, max_length=256,
                      padding=True, return_tensors="pt")  # fmt: skip
            feats.append(model.bert(**enc).pooler_output)
    X, y = torch.cat(feats).clone(), torch.tensor([lab for _, _, lab in pairs])
    head = model.classifier
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    weight = torch.where(y > 0, (y == 0).sum() / y.sum().clamp(min=1), 1.0)
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(X)[:, 0], y, weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest


# A Qwen3-Reranker-style chat template: the instruction (the prompt, as a system message), query and document,
# then an empty thinking block; the relevance is logit("yes") - logit("no") at the last token.
RERANKER_TEMPLATE = (
    '{%- set q = messages | selectattr("role", "eq", "query") | map(attribute="content") | first -%}'
    '{%- set d = messages | selectattr("role", "eq", "document") | map(attribute="content") | first -%}'
    '{%- set s = messages | selectattr("role", "eq", "system") | map(attribute="content") | first -%}'
    "<|im_start|>system\nJudge whether the Document meets the requirements of the Query; answer yes or no.<|im_end|>\n"
    "<|im_start|>user\n<Instruct>: {{ s or 'Given a web search query, retrieve relevant passages' }}\n"
    "<Query>: {{ q }}\n<Document>: {{ d }}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
)

# Qwen3-0.6B's configuration (the base of Qwen3-Reranker-0.6B), written out: nothing is downloaded.
QWEN3_06B = dict(
    vocab_size=151669,
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=40960,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    tie_word_embeddings=True,
)


def build_llm_reranker(dest: Path, texts: list, seed: int = 0, **shape: Any) -> Path:
    """A causal-LM reranker of Qwen3-Reranker-0.6B's shape (`shape` overrides QWEN3_06B, e.g. for tests) with
    seeded random weights and a byte-level BPE tokenizer trained on `texts` (pairs or strings; about Qwen's
    tokens per word on English), saved with save_pretrained."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=32000, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    # "yes" and "no" often enough that they are single tokens, as in Qwen's vocabulary (the reranker's answer)
    flat = {t for p in texts for t in ((p,) if isinstance(p, str) else p)}
    corpus = sorted(flat) + ["yes", "no"] * 1000 + [RERANKER_TEMPLATE]
    tok.train_from_iterator(corpus, trainer)
    if tok.token_to_id("yes") is None or tok.token_to_id("no") is None:
        tok.add_tokens([AddedToken("yes", single_word=True), AddedToken("no", single_word=True)])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", model_max_length=40960
    )
    hf.chat_template = RERANKER_TEMPLATE
    cfg = {**QWEN3_06B, **shape}
    cfg["vocab_size"] = max(cfg["vocab_size"], len(hf))
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(Qwen3Config(**cfg, pad_token_id=hf.pad_token_id))
    model.save_pretrained(dest)
    hf.save_pretrained(dest)
    return dest
