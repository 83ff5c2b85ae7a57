"""Tiny rerankers of every supported family, built locally (seeded random weights, a tokenizer trained in the
test) and saved as a Hugging Face folder; `st_folder` re-saves one as a sentence-transformers CrossEncoder folder."""

from __future__ import annotations

from pathlib import Path

import torch

from distill.teacher.synthetic import RERANKER_TEMPLATE
from tests.conftest import TINY_TEXTS

# conftest's sentences and "yes no", so that the causal tokenizers hold the answer tokens
TEXTS = [*dict.fromkeys(TINY_TEXTS), "yes no"] * 4

# A Qwen3-Reranker-style chat template (distill/teacher/bench.py holds the one copy)
ENCODERS = ("bert", "roberta", "xlm-roberta", "electra", "deberta-v2", "modernbert")
CAUSAL = ("qwen3", "qwen2", "gemma")


def _wordpiece(specials: list[str], lowercase: bool = True):
    """A WordPiece `tokenizers.Tokenizer` over TEXTS with a vocabulary built deterministically (the project's
    `wordpiece_vocab`: tokenizers' trainers break ties in hash order, so trained vocabularies differ run to run)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    from distill.teacher.train import wordpiece_vocab

    vocab = wordpiece_vocab(TEXTS, 200)
    vocab = {t: i for i, t in enumerate([*specials, *(t for t in vocab if t not in specials)])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    return tok


def wordpiece_tokenizer(token_types: bool):
    """A BERT-style tokenizer: [CLS] query [SEP] document [SEP], with or without token type ids."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = _wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"]
        if token_types
        else ["input_ids", "attention_mask"],
    )


def causal_tokenizer(chat_template: str | None, with_yes_no: bool = True):
    """A decoder's tokenizer (no [CLS]/[SEP] template) with chat special tokens; "yes"/"no" are tokens unless
    `with_yes_no=False`."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    tok = _wordpiece(["[PAD]", "[UNK]"])
    if not with_yes_no:
        vocab = {
            t: i
            for i, t in enumerate(
                t for t in sorted(tok.get_vocab(), key=tok.get_vocab().get) if t not in ("yes", "no")
            )
        }
        from tokenizers import models

        tok.model = models.WordPiece(vocab, unk_token="[UNK]")
    tok.add_special_tokens(
        [AddedToken(t, special=True) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=256,
    )
    if chat_template is not None:
        hf.chat_template = chat_template
    return hf


def encoder_model(arch: str, tok, num_labels: int):
    import transformers as tf

    # A wide initialisation so that scores spread (std ~0.6-1.3): a 1e-5 agreement then means something, while
    # fp32 rounding between batch shapes stays near 2e-6 (it grows with the weights' scale).
    init = 0.3
    common = dict(
        vocab_size=len(tok), num_labels=num_labels, pad_token_id=tok.pad_token_id, initializer_range=init
    )
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    if arch == "bert":
        return tf.BertForSequenceClassification(tf.BertConfig(**common, **small, max_position_embeddings=128))
    if arch == "roberta":
        cfg = tf.RobertaConfig(**common, **small, max_position_embeddings=130, type_vocab_size=1)
        return tf.RobertaForSequenceClassification(cfg)
    if arch == "xlm-roberta":
        cfg = tf.XLMRobertaConfig(**common, **small, max_position_embeddings=130, type_vocab_size=1)
        return tf.XLMRobertaForSequenceClassification(cfg)
    if arch == "electra":
        cfg = tf.ElectraConfig(**common, **small, embedding_size=32, max_position_embeddings=128)
        return tf.ElectraForSequenceClassification(cfg)
    if arch == "deberta-v2":
        cfg = tf.DebertaV2Config(**common, **small, max_position_embeddings=128, type_vocab_size=0)
        return tf.DebertaV2ForSequenceClassification(cfg)
    if arch == "modernbert":
        cfg = tf.ModernBertConfig(
            **common,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
            global_attn_every_n_layers=1,
            cls_token_id=tok.cls_token_id,
            sep_token_id=tok.sep_token_id,
            bos_token_id=tok.cls_token_id,
            eos_token_id=tok.sep_token_id,
        )
        return tf.ModernBertForSequenceClassification(cfg)
    raise ValueError(arch)


def causal_model(arch: str, tok):
    import transformers as tf

    common = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=0.2,
    )
    if arch == "qwen3":
        return tf.Qwen3ForCausalLM(tf.Qwen3Config(**common, head_dim=8))
    if arch == "qwen2":
        return tf.Qwen2ForCausalLM(tf.Qwen2Config(**common))
    if arch == "gemma":
        return tf.GemmaForCausalLM(tf.GemmaConfig(**common, head_dim=8))
    raise ValueError(arch)


def build(arch: str, dest: Path, *, num_labels: int = 1, seed: int = 0, chat_template: bool = True) -> Path:
    """A tiny reranker of architecture `arch` saved with save_pretrained into `dest`."""
    torch.manual_seed(seed)
    if arch in CAUSAL:
        tok = causal_tokenizer(RERANKER_TEMPLATE if chat_template and arch != "gemma" else None)
        model = causal_model(arch, tok)
    else:
        tok = wordpiece_tokenizer(token_types=arch in ("bert", "electra"))
        model = encoder_model(arch, tok, num_labels)
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest


def st_folder(hf_dir: Path, dest: Path, **kwargs) -> Path:
    """The same model saved as a sentence-transformers CrossEncoder folder (modules.json, ...)."""
    from sentence_transformers import CrossEncoder

    CrossEncoder(str(hf_dir), device="cpu", **kwargs).save(str(dest))
    return dest
