"""`make train-teacher`: fine-tune a cross-encoder on the train qrels with BM25 hard negatives.

Training is sentence-transformers' `CrossEncoderTrainer` with its own losses (`teacher.train.loss`):
`bce` (BinaryCrossEntropyLoss, pointwise), `listnet` (ListNetLoss; Cao et al., 2007), `ranknet`
(RankNetLoss; Burges et al., 2005) or `lambdaloss` (LambdaLoss; Wang et al., 2018). Each train query gives one
list: its judged documents (graded labels) and `negatives` BM25 candidates that are not judged relevant.

`teacher.train.base_model=scratch` (the sample world's default) builds a small BERT from scratch, with a
WordPiece tokenizer built from the corpus (its words and characters, `wordpiece_vocab`); any hub id or local
folder fine-tunes that model instead. A model from scratch starts, by default (`teacher.train.init=lexical`), as
an idf-weighted, saturating exact match over its own tokens (see `lexical_init`; `init=match` sets up only the first
attention layer as the exact-match detector, `match_init`): the signal that neural rankers otherwise need much data
and time to discover (DRMM, Guo et al., 2016; K-NRM, Xiong et al., 2017), so that a 3-minute CPU run learns ranking
rather than token identity. Words that only the training queries use (aliases) become tokens of their own,
started as the document words they predict in the training lists (`teacher.train.translate_min_queries`,
`translation_init`). The result is a normal Hugging Face model folder, `<workspace>/models/teacher/`.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from distill.data.beir import Dataset
from distill.data.prepare import dataset_dir, load_dataset
from distill.distributed import process_ranks
from distill.errors import ConfigError
from distill.hf_training import time_limit_callback, training_args
from distill.retrieval.candidates import checked_candidates
from distill.stamps import Stage, data_config
from distill.teacher.schema import TeacherTrainConfig
from distill.tracking import start_run
from distill.workspace import Workspace, staged_dir, write_json_atomic

log = logging.getLogger(__name__)


def train_texts(ds: Dataset) -> list[str]:
    """The tokenizer's training text: the corpus (as a pre-trained model's tokenizer would have seen)."""
    return ds.doc_texts(ds.corpus.index)


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# In a from-scratch teacher's folder: the words its vocabulary took from the training queries, each with the
# document tokens it was started as (`translation_init`; an empty list: it kept its own embedding)
TRANSLATION_FILE = "translation.json"


def _bert_tokenizer(model: Any) -> Any:
    """A `tokenizers.Tokenizer` over `model` that splits text as BERT does (lower-cased words and punctuation):
    the vocabulary is counted and the text tokenised with the same splitting."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers

    tok = Tokenizer(model)
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok


def wordpiece_vocab(texts: list[str], size: int) -> dict[str, int]:
    """A WordPiece vocabulary for `texts`, the same on every run: the special tokens, every character (as a
    word start `c` and a continuation `##c`, so that any word can be spelled), then whole words by descending
    count (ties alphabetical) up to `size`.

    Whole words rather than trained sub-word merges: `tokenizers`' WordPieceTrainer breaks count ties in hash-map
    order and gives a different vocabulary on each run (huggingface/tokenizers#1794), and with it a different
    model from the same seed. Whole-word tokens also keep exact matches between query and document terms exact,
    which is what `match_init` and `lexical_init` detect; a word outside the vocabulary is cut into its longest
    known prefix and characters."""
    from tokenizers import models, trainers

    counter = _bert_tokenizer(models.WordLevel(unk_token="[UNK]"))
    # WordLevelTrainer orders words by count, then alphabetically (deterministic).
    counter.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=2**31 - 1, special_tokens=[]))
    words = sorted(counter.get_vocab().items(), key=lambda kv: kv[1])
    chars = sorted({c for w, _ in words for c in w})
    tokens = [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars)]
    if size < len(tokens):
        raise ConfigError(
            f"teacher.train.vocab_size={size} is too small for the corpus's {len(chars)} distinct characters "
            f"(it needs at least {len(tokens)}: the special tokens and each character twice)"
        )
    vocab = {t: i for i, t in enumerate(tokens)}
    for w, _ in words:
        if len(vocab) >= size:
            break
        vocab.setdefault(w, len(vocab))
    return vocab


def query_words(queries: list[str], vocab: dict[str, int], min_queries: int) -> list[str]:
    """The words (as BERT splits and lower-cases them) that at least `min_queries` of `queries` hold and `vocab`
    lacks, most frequent first (ties alphabetical): the words only queries use, which the corpus's vocabulary
    would cut into a prefix and characters."""
    from tokenizers import models

    split = _bert_tokenizer(models.WordLevel(unk_token="[UNK]"))
    counts: dict[str, int] = {}
    for q in queries:
        norm = split.normalizer.normalize_str(q)  # type: ignore[union-attr]
        for w in {w for w, _ in split.pre_tokenizer.pre_tokenize_str(norm)}:  # type: ignore[union-attr]
            if w not in vocab:
                counts[w] = counts.get(w, 0) + 1
    return [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_queries]


def build_scratch_model(
    texts: list[str],
    tc: TeacherTrainConfig,
    dest: Path,
    num_labels: int = 1,
    translate: tuple[list[str], Any] | None = None,
) -> Path:
    """A small randomly initialised BERT cross-encoder with a WordPiece tokenizer built from `texts`
    (`wordpiece_vocab`); the same texts and seed give the same files.

    `translate` = (the training queries, a `(tokenizer) -> list of (query words, positive doc token ids, negative
    docs' token ids)` callable): with `tc.translate_min_queries` > 0, the words at least that many training queries
    hold and the corpus lacks become tokens of their own (`query_words`), beyond `tc.vocab_size` (which sizes the
    corpus's part), each started as the document tokens it predicts in the training lists (`translation_init`)."""
    from tokenizers import decoders, models, processors
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast  # type: ignore[attr-defined]

    vocab = wordpiece_vocab(texts, tc.vocab_size)
    added: list[str] = []
    if translate is not None and tc.translate_min_queries > 0:
        added = query_words(translate[0], vocab, tc.translate_min_queries)
        vocab.update({w: len(vocab) + i for i, w in enumerate(added)})
    tok = _bert_tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.decoder = decoders.WordPiece()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = BertTokenizerFast(tokenizer_object=tok, model_max_length=tc.max_length)
    torch.manual_seed(tc.seed)
    config = BertConfig(  # type: ignore[call-arg]
        vocab_size=tok.get_vocab_size(),
        hidden_size=tc.hidden_size,
        num_hidden_layers=tc.num_layers,
        num_attention_heads=tc.num_heads,
        intermediate_size=tc.intermediate_size,
        max_position_embeddings=tc.max_length,
        num_labels=num_labels,
        pad_token_id=0,
        hidden_dropout_prob=tc.dropout,
        attention_probs_dropout_prob=tc.dropout,
    )
    model = BertForSequenceClassification(config)
    if tc.init == "match":
        match_init(model, tc.match_scale)
    elif tc.init == "lexical":
        lexical_init(model, token_idf(fast, texts), tc.saturation)
    table = {}
    if added and translate is not None:
        table = translation_init(model, [vocab[w] for w in added], translate[1](fast))
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    fast.save_pretrained(dest)
    record = dest / TRANSLATION_FILE
    if added:
        names = fast.convert_ids_to_tokens
        write_json_atomic(
            {
                "min_queries": tc.translate_min_queries,
                "words": {w: [[names(d), round(v, 4)] for d, v in table.get(vocab[w], [])] for w in added},
            },
            record,
        )
    else:
        record.unlink(missing_ok=True)
    return dest


@torch.no_grad()
def match_init(model: Any, scale: float = 1.0) -> None:
    """Start a from-scratch BERT with an exact-match detector in its first attention layer.

    The hidden space is split: the first 7/8 of the dimensions hold token identity (unit-variance word
    embeddings), the last 1/8 the segment (+1 for the query, -1 for the document); position embeddings start at
    zero. The first layer's query and key projections are `scale` times the projection onto the token
    dimensions, so a token attends to the other occurrences of the same token (random embeddings are nearly
    orthogonal), and its value and output projections are the identity, so what comes back carries the
    segment of those occurrences: a query token found n times in the document moves towards the document's
    segment sign by n/(n+1), a saturating term frequency. Everything else keeps BERT's initialisation and all
    weights are trained. With one head of width 128 the match is already sharp at `scale` 1; larger scales saturate the softmax.
    """
    cfg = model.config
    hid = cfg.hidden_size
    tok_dims = hid - max(1, hid // 8)
    emb = model.bert.embeddings
    emb.word_embeddings.weight.normal_(0.0, 1.0)
    emb.word_embeddings.weight[:, tok_dims:] = 0.0
    emb.position_embeddings.weight.zero_()
    seg = emb.token_type_embeddings.weight
    seg.zero_()
    seg[0, tok_dims:] = 1.0
    if seg.shape[0] > 1:
        seg[1, tok_dims:] = -1.0
    attn = model.bert.encoder.layer[0].attention
    proj = torch.zeros(hid, hid)
    proj[:tok_dims, :tok_dims] = torch.eye(tok_dims)
    for lin, w in (
        (attn.self.query, scale * proj),
        (attn.self.key, scale * proj),
        (attn.self.value, torch.eye(hid)),
        (attn.output.dense, torch.eye(hid)),
    ):
        lin.weight.copy_(w)
        lin.bias.zero_()


def token_idf(tokenizer: Any, texts: list[str], batch: int = 10_000) -> torch.Tensor:
    """BM25's (Lucene's) idf of every token id over `texts` as `tokenizer` splits them: log(1 + (N - df + 0.5) /
    (df + 0.5)), where df counts the texts holding the token (a token no text holds gets the largest idf); 0.001
    for the special tokens."""
    df = np.zeros(len(tokenizer), dtype=np.int64)
    for i in range(0, len(texts), batch):
        for ids in tokenizer(texts[i : i + batch], add_special_tokens=False, verbose=False)["input_ids"]:
            df[np.unique(np.asarray(ids, dtype=np.int64))] += 1
    n = len(texts)
    idf = np.log1p((n - df + 0.5) / (df + 0.5))
    # special tokens ([CLS], [SEP], [PAD], ...) weigh next to nothing
    idf[tokenizer.all_special_ids] = 1e-3
    return torch.tensor(idf, dtype=torch.float32)


@torch.no_grad()
def lexical_init(model: Any, idf: torch.Tensor, saturation: float = 1.2) -> None:
    """Start a from-scratch BERT as a lexical ranker over its own tokens: the score rises with the sum, over the
    query's tokens t, of idf(t) * n_t / (saturation + n_t), where n_t counts t's occurrences in the document
    (BM25's idf and term-frequency saturation without its length normalisation; on the sample world this scores
    test nDCG@10 0.677 before any training, against 0.693 for BM25 over the same tokens).

    Written by hand because no library initialises a transformer this way. Needs one head and two layers or more;
    every weight is then trained as usual. The hidden space is split into token dimensions (unit-variance,
    zero-mean word embeddings), match dimensions (+a for the query segment, -a for the document's), segment
    dimensions (+1 / -1, left out of the first layer's values so that they stay the segment) and two idf
    dimensions (+c log idf, -c log idf); every block beside the token's sums to zero over its dimensions, so
    LayerNorm only rescales, and the blocks that vary from token to token are small, so that it rescales every
    token alike.
    - Layer 1 is `match_init`'s exact-match detector, with an extra key/query term on the segment dimensions
      that weighs a token's own segment `saturation` times the other's: a query token found n times in the
      document keeps saturation / (saturation + n) of its attention on itself, so its match dimensions hold
      a * 2 * saturation / (saturation + n).
    - Layer 2's query is a constant, its key (segment and idf dimensions) gives every query token a weight
      proportional to its idf and document tokens none, its value copies the match dimensions: [CLS] collects
      sum_t idf(t) * saturation / (saturation + n_t) / sum_t idf(t), which falls as the idf-weighted matches grow.
    - The feed-forward blocks start at zero (each layer passes its attention on), the pooler reads [CLS]'s match
      dimensions with a negative sign and the classifier reads that one pooled dimension.
    """
    cfg = model.config
    hid, layers = cfg.hidden_size, model.bert.encoder.layer
    if cfg.num_attention_heads != 1 or len(layers) < 2:
        raise ConfigError(
            f"teacher.train.init=lexical needs num_heads=1 and num_layers >= 2 (got {cfg.num_attention_heads} "
            f"and {len(layers)}); use init=match for other shapes"
        )
    extra = max(8, hid // 8)
    tok = hid - extra
    n_match = (extra // 2) // 2 * 2
    n_seg = (extra - n_match - 2) // 2 * 2
    if tok < 16 or n_seg < 2:
        raise ConfigError(f"teacher.train.hidden_size={hid} is too small for init=lexical (at least 24)")
    match = torch.arange(tok, tok + n_match)
    seg = torch.arange(tok + n_match, tok + n_match + n_seg)
    lidf = torch.tensor([hid - 2, hid - 1])
    v = torch.tensor([1.0, -1.0]).repeat(n_match // 2)
    u = torch.tensor([1.0, -1.0]).repeat(n_seg // 2)
    # small amplitudes for the blocks that vary from token to token (see the docstring)
    a = c = 0.2
    emb = model.bert.embeddings
    words = emb.word_embeddings.weight
    words.normal_(0.0, 1.0)
    words[:, tok:] = 0.0
    words[:, :tok] -= words[:, :tok].mean(dim=1, keepdim=True)
    words[:, :tok] *= (tok**0.5) / words[:, :tok].norm(dim=1, keepdim=True)
    log_idf = torch.log(idf.clamp(min=1e-3))
    words[:, lidf[0]], words[:, lidf[1]] = c * log_idf, -c * log_idf
    emb.position_embeddings.weight.zero_()
    types = emb.token_type_embeddings.weight
    types.zero_()
    for row, sign in ((0, 1.0), (1, -1.0))[: types.shape[0]]:
        types[row, match], types[row, seg] = sign * a * v, sign * u
    eye = torch.eye(hid)
    first = layers[0].attention
    # the segment term of the first layer's logits: +-f^2 n_seg / sqrt(hid) for the same / the other segment
    f = float(np.sqrt(np.log(saturation) * np.sqrt(hid) / (2 * n_seg))) if saturation > 1 else 0.0
    qk = torch.zeros(hid, hid)
    qk[:tok, :tok] = torch.eye(tok)
    qk[seg, seg] = f
    value = eye.clone()
    value[seg, seg] = 0.0
    value[lidf, lidf] = 0.0
    for lin, w in (
        (first.self.query, qk),
        (first.self.key, qk),
        (first.self.value, value),
        (first.output.dense, eye),
    ):
        lin.weight.copy_(w)
        lin.bias.zero_()
    for layer in layers:
        layer.output.dense.weight.zero_()
        layer.output.dense.bias.zero_()
    for layer in layers[2:]:
        layer.attention.output.dense.weight.zero_()
        layer.attention.output.dense.bias.zero_()
    second = layers[1].attention
    # what LayerNorm divides a token by after the first layer (token dimensions 2e, segment +-1)
    std = float(np.sqrt((4 * tok + n_seg) / hid))
    # BERT's random key and value rows elsewhere, shrunk so that they barely move the logits at the start
    for lin in (second.self.key, second.self.value):
        lin.weight.mul_(0.1)
        lin.bias.zero_()
    second.self.query.weight.zero_()
    second.self.query.bias.zero_()
    second.self.query.bias[0] = hid**0.5
    # query tokens (segment +1) outweigh the document's by e^(2 * 16 / std), about e^17
    second.self.key.weight[0] = 0.0
    second.self.key.weight[0, seg] = 16.0 * u / n_seg
    second.self.key.weight[0, lidf] = torch.tensor([1.0, -1.0]) * std / (2 * c)
    second.self.value.weight[match] = 0.0
    second.self.value.weight[match.unsqueeze(1), match.unsqueeze(0)] = torch.outer(v, v) / n_match
    second.output.dense.weight.copy_(eye)
    second.output.dense.bias.zero_()
    pooler = model.bert.pooler.dense
    pooler.weight[0] = 0.0
    # [CLS]'s match reading, negated, centred and scaled so that the pooled value stays in tanh's straight part
    pooler.weight[0, match] = -3.0 * v / (n_match * a)
    pooler.bias.zero_()
    pooler.bias[0] = 3.0 * 0.8
    # weight 4: a matching document scores about 1-2 above one that does not match, the gap ListNet's targets
    # (softmax of grades 0-2) ask for; on the sample world weight 1 trained to test nDCG@10 0.638, 4 to 0.671
    model.classifier.weight.zero_()
    model.classifier.weight[0, 0] = 4.0
    model.classifier.bias.zero_()


@torch.no_grad()
def translation_init(
    model: Any,
    word_ids: list[int],
    lists: list[tuple[set[int], set[int], list[set[int]]]],
    threshold: float = 0.2,
    close: float = 0.75,
    most: int = 3,
) -> dict[int, list[tuple[int, float]]]:
    """Start each query-only token of `word_ids` as the document tokens it predicts: a statistical translation
    table (Berger and Lafferty, 1999) read off the training lists, so that the exact-match start of
    `lexical_init`/`match_init` matches a query's alias with the document words it stands for.

    `lists` holds, per training list, the token ids of its query, of its positive document and of each negative.
    A document token d scores, for word w, the mean over the lists whose query holds w of [d in the positive] -
    (the share of negatives holding d): a word the relevant documents hold and the other candidates of the same
    query do not (a topic's word, which both hold, scores near 0). The tokens scoring at least `threshold` and
    `close` times the best (at most `most`) give w's embedding, idf dimensions included: one token's row as it is,
    so that w matches it as the token matches itself, or several rows mixed by score and rescaled to the norm of
    w's own row. A word whose best token scores below `threshold` keeps its own embedding. Returns
    {word id: [(token id, score)]}.

    Written by hand: no library starts a transformer's embeddings from a translation table."""
    words = model.bert.embeddings.word_embeddings.weight
    # the special tokens come first in every vocabulary built here (`wordpiece_vocab`), and no word stands for
    # another query-only word
    skip = set(range(len(SPECIAL_TOKENS))) | set(word_ids)
    holding: dict[int, list[int]] = {w: [] for w in word_ids}
    for i, (q, _, _) in enumerate(lists):
        for w in q & holding.keys():
            holding[w].append(i)
    out: dict[int, list[tuple[int, float]]] = {}
    for w in word_ids:
        mine = [lists[i][1:] for i in holding[w]]
        if not mine:
            continue
        score: dict[int, float] = {}
        for pos, negs in mine:
            for d in pos:
                score[d] = score.get(d, 0.0) + 1.0
            for n in negs:
                for d in n:
                    score[d] = score.get(d, 0.0) - 1.0 / len(negs)
        ranked = sorted(
            ((d, v / len(mine)) for d, v in score.items() if d not in skip),
            key=lambda kv: (-kv[1], kv[0]),
        )
        if not ranked or ranked[0][1] < threshold:
            continue
        keep = [(d, v) for d, v in ranked[:most] if v >= max(threshold, close * ranked[0][1])]
        weights = torch.tensor([v for _, v in keep])
        mixed = (weights[:, None] * words[[d for d, _ in keep]]).sum(0) / weights.sum()
        norm = words[w].norm() / mixed.norm().clamp(min=1e-6)
        words[w] = mixed * norm if len(keep) > 1 else mixed
        out[w] = keep
    return out


def translation_lists(ds: Dataset, lists: pd.DataFrame) -> Any:
    """What `translation_init` reads, from the teacher's training lists, once the tokenizer is built: per list
    the token ids of its query, of its positive (first) document and of its negatives."""
    qtext = ds.queries["text"]

    def read(tokenizer: Any) -> list[tuple[set[int], set[int], list[set[int]]]]:
        docids = sorted({d for docs in lists.docs for d in docs})
        ids = tokenizer(ds.doc_texts(docids), add_special_tokens=False, verbose=False)["input_ids"]
        doc = {d: set(i) for d, i in zip(docids, ids, strict=True)}
        # a query has up to 3 lists: each query tokenised once
        qids = list(dict.fromkeys(lists.qid))
        ids = tokenizer([qtext[q] for q in qids], add_special_tokens=False, verbose=False)["input_ids"]
        query = {q: set(i) for q, i in zip(qids, ids, strict=True)}
        return [
            (query[q], doc[docs[0]], [doc[d] for d in docs[1:]])
            for q, docs in zip(lists.qid, lists.docs, strict=True)
            if len(docs) > 1
        ]

    return read


def build_lists(ds: Dataset, cands: pd.DataFrame, negatives: int, seed: int) -> pd.DataFrame:
    """One row per train query: query text, its judged documents (graded) and hard BM25 negatives.

    Negatives are the top BM25 candidates without a positive judgement, sampled from the top 3*negatives.
    """
    rng = np.random.default_rng(seed)
    qrels = ds.judged("train", "train-teacher")
    rel = qrels[qrels.relevance > 0]
    by_q = {q: g for q, g in rel.groupby("qid")}
    train_c = cands[cands.split == "train"]
    rows = []
    for qid, group in train_c.groupby("qid", sort=False):
        pos = by_q.get(qid)
        if pos is None:
            continue
        pos = pos.sort_values("relevance", ascending=False)
        judged = set(pos.docid)
        pool = [d for d in group.sort_values("rank").docid if d not in judged][: 3 * negatives]
        if not pool:
            continue
        negs = list(rng.choice(pool, size=min(negatives, len(pool)), replace=False))
        # One list per positive (at most 3 per query), each with the query's top-graded positive first.
        for _, p in pos.head(3).iterrows():
            docs = [p.docid] + negs
            labels = [float(p.relevance)] + [0.0] * len(negs)
            rows.append({"qid": qid, "docs": docs, "labels": labels})
    if not rows:
        raise ConfigError(
            "no train query has both a positive judgement and a BM25 candidate; run "
            "`make candidates` with the train split (retrieval.splits=[train,test])"
        )
    return pd.DataFrame(rows)


def _loss(name: str, model: Any) -> Any:
    from sentence_transformers.cross_encoder import losses

    if name == "bce":
        return losses.BinaryCrossEntropyLoss(model)
    if name == "listnet":
        return losses.ListNetLoss(model)
    if name == "ranknet":
        return losses.RankNetLoss(model)
    return losses.LambdaLoss(model)


def _dataset(ds: Dataset, lists: pd.DataFrame, loss: str, max_grade: float, seed: int = 0) -> Any:
    from datasets import Dataset as HFDataset

    qtext = ds.queries["text"]
    lists = lists.sample(frac=1.0, random_state=seed)
    if loss == "bce":
        q, d, y = [], [], []
        for r in lists.itertuples():
            texts = ds.doc_texts(r.docs)
            q += [qtext[r.qid]] * len(texts)
            d += texts
            y += [min(1.0, lab / max_grade) for lab in r.labels]
        return HFDataset.from_dict({"query": q, "passage": d, "label": y})
    return HFDataset.from_dict(
        {
            "query": [qtext[q] for q in lists.qid],
            "docs": [ds.doc_texts(d) for d in lists.docs],
            "labels": [list(lab) for lab in lists.labels],
        }
    )


def starting_point(
    tc: TeacherTrainConfig, ws: Workspace, ds: Dataset, lists: pd.DataFrame, args: Any, ranks: Any
) -> str:
    """The model to fine-tune: `base_model` as given, or for `scratch` a small BERT built from the corpus and the
    training lists (rank 0 builds it, seeded, while the other ranks of a DDP run wait, then all load it)."""
    if tc.base_model != "scratch":
        return tc.base_model
    with args.main_process_first(desc="teacher init"):
        if ranks.is_main:
            build_start(tc, ds, lists, ws.teacher_init)
    return str(ws.teacher_init)


def build_start(tc: TeacherTrainConfig, ds: Dataset, lists: pd.DataFrame, dest: Path) -> Path:
    """The from-scratch start in `dest`: the corpus's vocabulary (plus the training queries' own words) and the
    model of `tc`'s shape and init, its query-only words started from the training `lists` (`build_scratch_model`).
    The teacher's start, and a cross-encoder student's with `student.base_model=lexical` (at its own shape)."""
    queries = ds.queries["text"][sorted(set(lists.qid))].tolist()
    return build_scratch_model(train_texts(ds), tc, dest, translate=(queries, translation_lists(ds, lists)))


def save_teacher(model: Any, info: dict[str, Any], out: Path, init: Path | None = None) -> None:
    """The trained teacher, written whole: a crash leaves the previous teacher as it was. A from-scratch teacher
    keeps its starting folder's record of the words it took from the training queries (`TRANSLATION_FILE`)."""
    with staged_dir(out) as tmp:
        model.save(str(tmp))
        write_json_atomic(info, tmp / "distill_train.json")
        if init is not None and (init / TRANSLATION_FILE).exists():
            shutil.copyfile(init / TRANSLATION_FILE, tmp / TRANSLATION_FILE)


def prepare_training(cfg: DictConfig, tc: TeacherTrainConfig, ws: Workspace, ranks: Any) -> tuple[Any, ...]:
    """The trainer's arguments, the training lists (qrels positives with BM25 negatives), their dataset and the
    model to start from."""
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainingArguments

    torch.manual_seed(tc.seed)
    ds = load_dataset(cfg)
    checked_candidates(cfg, ws, ds)
    cands = pd.read_parquet(ws.candidates)
    args = training_args(
        CrossEncoderTrainingArguments,
        cfg,
        "train-teacher",
        epochs=tc.epochs,
        batch_size=tc.batch_size if tc.loss != "bce" else tc.batch_size * (tc.negatives + 1),
        lr=tc.learning_rate,
        warmup_ratio=tc.warmup_ratio,
        seed=tc.seed,
        workspace=ws,
    )
    lists = build_lists(ds, cands, tc.negatives, tc.seed)
    max_grade = float(ds.judged("train", "train-teacher").relevance.max())
    train_ds = _dataset(ds, lists, tc.loss, max_grade, tc.seed)
    model = CrossEncoder(
        starting_point(tc, ws, ds, lists, args, ranks),
        num_labels=1,
        max_length=tc.max_length,
        activation_fn=torch.nn.Identity(),
        device="cpu" if not torch.cuda.is_available() else None,
    )
    return args, lists, train_ds, model


def run(cfg: DictConfig) -> dict[str, Any]:
    """Fine-tune the teacher on the train qrels with BM25 negatives; rank 0 saves and reports."""
    from sentence_transformers.cross_encoder import CrossEncoderTrainer

    ws = Workspace.from_cfg(cfg)
    tc = TeacherTrainConfig.from_cfg(cfg.teacher.train)
    ranks = process_ranks()  # under accelerate launch / torchrun the trainer runs DDP over these processes
    t0 = time.perf_counter()
    args, lists, train_ds, model = prepare_training(cfg, tc, ws, ranks)
    out = ws.model("teacher")
    limit = time_limit_callback(tc.max_seconds, "teacher.train.max_seconds")
    with start_run(cfg, stage="train-teacher") as tracker:
        trainer = CrossEncoderTrainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            loss=_loss(tc.loss, model),
            callbacks=[limit],
        )
        result = trainer.train()
        schedule, cut_note = limit.schedule()
        if not ranks.is_main:  # rank 0 saves and reports
            return {"rank": ranks.rank, "steps": result.global_step}
        seconds = time.perf_counter() - t0
        info = {
            "processes": ranks.world,
            "base_model": tc.base_model,
            "loss": tc.loss,
            "train_lists": len(lists),
            "steps": result.global_step,
            **schedule,
            "train_loss": result.training_loss,
            "seconds": round(seconds, 1),
        }
        save_teacher(model, info, out, ws.teacher_init if tc.base_model == "scratch" else None)
        tracker.summary({f"train/{k}": v for k, v in info.items() if isinstance(v, (int, float))})
        tracker.artifact(out, type="model", name="teacher")
    print(
        f"train-teacher: {info['steps']} steps on {len(lists)} lists in {seconds:.0f}s{cut_note} "
        f"(loss {result.training_loss:.4f}) -> {out}"
    )
    return info


STAGE = Stage(
    name=lambda cfg: "train-teacher",
    run=run,
    config=lambda cfg: [data_config(cfg), cfg.teacher.train],
    inputs=lambda cfg, ws: {"dataset": dataset_dir(cfg), "candidates": ws.candidates},
    outputs=lambda cfg, ws: [ws.model("teacher")],
)
