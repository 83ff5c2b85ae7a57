"""An encoder reranker's pair token ids made straight from its fast tokenizer's Rust backend, and documents whose
ids are kept ahead of time.

`CrossEncoder.preprocess` tokenises every pair whole: a query once for each of its candidates, a document once for
each query it is a candidate of, all padded into tensors that the engine unpads again. `BackendPairs` encodes each
distinct text once, without special tokens, and assembles each pair from the ids with the tokenizer's own pair
layout and `longest_first` truncation (`PairTemplate`). The scoring engine uses it only after a probe found the
same ids and token types as `preprocess` (distill/teacher/engine.py).

A production reranker does not tokenise its documents at request time: they are tokenised when they are indexed
and their ids stored beside them (Vespa's cross-encoder ranking stores them as a document tensor). `keep` does
that: the documents' ids, cut to the most a pair can hold, in one int32 array with offsets, found by each text's
digest (not the text), so that later calls tokenise only their queries and the texts not kept.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from distill.teacher.model import TeacherModel


def longest_first(n1: int, n2: int, target: int) -> tuple[int, int]:
    """How many tokens of each sequence a pair keeps under `longest_first` truncation to `target` tokens
    (the tokenizer's length less its special tokens), as the `tokenizers` library cuts: the shorter sequence
    whole when the longer can fill the rest, else both to half. Checked against the tokenizer by
    `PairTemplate.agrees`."""
    swap = n1 > n2
    short, long_ = (n2, n1) if swap else (n1, n2)
    keep_long = short if short > target else max(short, target - short)
    keep_short = short
    if keep_short + keep_long > target:
        keep_short = target // 2
        keep_long = keep_short + target % 2
    keep_short, keep_long = min(keep_short, short), min(keep_long, long_)
    return (keep_long, keep_short) if swap else (keep_short, keep_long)


@dataclass(frozen=True)
class PairTemplate:
    """Where a tokenizer puts a pair's special tokens and which token type each part has, read from its own
    post-processor (`[CLS] a [SEP] b [SEP]` for BERT, `<s> a </s></s> b </s>` for RoBERTa, ...), with its
    `longest_first` truncation: `assemble` gives the ids and types the tokenizer's `post_process` gives.

    Why by hand: `post_process` needs the tokenizer's `Encoding` objects, which hold each token's string and
    offsets besides its id; documents kept for many queries are kept as ids alone (4 bytes a token)."""

    prefix: np.ndarray
    mid: np.ndarray
    suffix: np.ndarray
    types: tuple[np.ndarray, np.ndarray, np.ndarray]  # of prefix, mid, suffix
    a_type: int
    b_type: int
    target: int  # tokens the two texts may hold together
    left: bool  # truncation drops tokens from the start

    @classmethod
    def read(cls, plain: Any, max_length: int, left: bool) -> PairTemplate:
        """The layout of `plain` (a backend tokenizer without truncation or padding) for pairs of `max_length`
        tokens. Raises ValueError when the pair is not `specials a specials b specials` with one token type
        for each text."""
        a = plain.encode("query", add_special_tokens=False)
        b = plain.encode("document", add_special_tokens=False)
        if not a.ids or not b.ids:
            raise ValueError("the tokenizer gives no tokens for a plain word")
        p = plain.post_process(a, b, add_special_tokens=True)
        ids, types = np.asarray(p.ids, np.int64), np.asarray(p.type_ids, np.int64)
        content = np.flatnonzero(~np.asarray(p.special_tokens_mask, bool))
        na, nb = len(a.ids), len(b.ids)
        if len(content) != na + nb or ids[content].tolist() != [*a.ids, *b.ids]:
            raise ValueError("the pair's ids are not the two texts' ids with special tokens around them")
        ia, ib = int(content[0]), int(content[na])
        if content[na - 1] != ia + na - 1 or content[-1] != ib + nb - 1:
            raise ValueError("a text's ids are split by special tokens")
        ta, tb = types[ia : ia + na], types[ib : ib + nb]
        if len(set(ta.tolist())) != 1 or len(set(tb.tolist())) != 1:
            raise ValueError("a text's tokens have more than one token type")
        cuts = [slice(0, ia), slice(ia + na, ib), slice(ib + nb, len(ids))]
        specials = sum(c.stop - c.start for c in cuts)
        return cls(
            prefix=ids[cuts[0]],
            mid=ids[cuts[1]],
            suffix=ids[cuts[2]],
            types=(types[cuts[0]], types[cuts[1]], types[cuts[2]]),
            a_type=int(ta[0]),
            b_type=int(tb[0]),
            target=max_length - specials,
            left=left,
        )

    def cut(self, ids: np.ndarray, n: int) -> np.ndarray:
        return ids[len(ids) - n :] if self.left else ids[:n]

    def assemble(self, a: np.ndarray, len_a: int, b: np.ndarray, len_b: int) -> tuple[np.ndarray, np.ndarray]:
        """The pair's ids and token types; `a` and `b` may be cut to `target` tokens already (kept documents),
        `len_a` and `len_b` are the texts' whole lengths, which decide the truncation."""
        n1, n2 = longest_first(len_a, len_b, self.target)
        ids = np.concatenate([self.prefix, self.cut(a, n1), self.mid, self.cut(b, n2), self.suffix])
        p, m, s = self.types
        types = np.concatenate(
            [p, np.full(n1, self.a_type, np.int64), m, np.full(n2, self.b_type, np.int64), s]
        )
        return ids, types

    def agrees(self, plain: Any, pairs: Any) -> bool:
        """Whether `assemble` equals `pairs.post_process` (the tokenizer with its truncation) on pairs whose
        lengths straddle every boundary of the truncation: empty, one token, half the target and the target,
        each side and both."""
        t, h = self.target, self.target // 2
        words = sorted(
            {k for k in (0, 1, 2, 3, h - 1, h, h + 1, t - 1, t, t + 1, t + 2, 2 * t + 1) if k >= 0}
        )
        a = plain.encode_batch([" ".join(["query"] * k) for k in words], add_special_tokens=False)
        b = plain.encode_batch([" ".join(["document"] * k) for k in words], add_special_tokens=False)
        for ea in a:
            for eb in b:
                want = pairs.post_process(ea, eb, add_special_tokens=True)
                ids, types = self.assemble(
                    np.asarray(ea.ids, np.int64), len(ea.ids), np.asarray(eb.ids, np.int64), len(eb.ids)
                )
                if ids.tolist() != want.ids or types.tolist() != want.type_ids:
                    return False
        return True


def digests(texts: Sequence[str]) -> np.ndarray:
    """Each text's 128-bit BLAKE2b digest as two uint64 columns: the key a kept text is found by, so that the
    store holds 16 bytes a text rather than the text (a corpus's texts would double what its ids take)."""
    if not texts:
        return np.empty((0, 2), np.uint64)
    joined = b"".join(
        hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).digest() for t in texts
    )
    return np.frombuffer(joined, np.uint64).reshape(-1, 2)


class KeptTexts:
    """Texts' token ids kept ahead of time, each cut to what a pair can hold (`PairTemplate.target` tokens from
    the side truncation keeps), in one int32 array with offsets, and each text's whole length; a text is found by
    its digest (`digests`), kept sorted beside its row.

    Why by hand: the lookup is a sorted array and `searchsorted` (20 bytes a text) rather than a dict keyed by
    the texts, which for a server's corpus would hold every text again."""

    def __init__(self) -> None:
        self.flat = np.empty(0, np.int32)
        self.offsets = np.zeros(1, np.int64)
        self.lengths = np.empty(0, np.int64)
        # the digests' two halves, sorted, and the row of each
        self.hi = np.empty(0, np.uint64)
        self.lo = np.empty(0, np.uint64)
        self.row = np.empty(0, np.int32)

    def __len__(self) -> int:
        return len(self.row)

    @property
    def nbytes(self) -> int:
        arrays = (self.flat, self.offsets, self.lengths, self.hi, self.lo, self.row)
        return int(sum(a.nbytes for a in arrays))

    def find(self, texts: Sequence[str]) -> np.ndarray:
        """Each text's row, or -1 where it is not kept."""
        return self._find(digests(texts))

    def _find(self, keys: np.ndarray) -> np.ndarray:
        left = np.searchsorted(self.hi, keys[:, 0], "left")
        right = np.searchsorted(self.hi, keys[:, 0], "right")
        out = np.full(len(keys), -1, np.int64)
        one = np.flatnonzero(right - left == 1)
        hit = one[self.lo[left[one]] == keys[one, 1]]
        out[hit] = self.row[left[hit]]
        for i in np.flatnonzero(right - left > 1):  # texts whose first 64 bits agree: one in 2**64 pairs
            same = left[i] + np.flatnonzero(self.lo[left[i] : right[i]] == keys[i, 1])
            out[i] = self.row[same[0]] if len(same) else -1
        return out

    def add(self, texts: Sequence[str], encode: Any, template: PairTemplate, batch: int = 8192) -> None:
        """Encode the texts not kept yet with `encode` a batch at a time (only a batch's `Encoding` objects live
        at once) and keep their cut ids; the arrays grow once per call."""
        keys = digests(texts)
        _, first = np.unique(keys, axis=0, return_index=True)
        first = np.sort(first)
        new = first[self._find(keys[first]) < 0]
        flats, sizes, lengths = [], [], []
        for s in range(0, len(new), batch):
            encs = encode([texts[i] for i in new[s : s + batch]])
            parts = [
                template.cut(np.asarray(e.ids, np.int32), min(len(e.ids), template.target)) for e in encs
            ]
            flats.append(np.concatenate(parts) if parts else np.empty(0, np.int32))
            sizes.append(np.fromiter((len(p) for p in parts), np.int64, len(parts)))
            lengths.append(np.fromiter((len(e.ids) for e in encs), np.int64, len(encs)))
        if not flats:
            return
        hi = np.concatenate([self.hi, keys[new, 0]])
        lo = np.concatenate([self.lo, keys[new, 1]])
        row = np.concatenate([self.row, np.arange(len(self), len(self) + len(new), dtype=np.int32)])
        order = np.lexsort((lo, hi))
        self.hi, self.lo, self.row = hi[order], lo[order], row[order]
        self.flat = np.concatenate([self.flat, *flats])
        self.offsets = np.concatenate([self.offsets, self.offsets[-1] + np.cumsum(np.concatenate(sizes))])
        self.lengths = np.concatenate([self.lengths, *lengths])

    def ids(self, row: int) -> tuple[np.ndarray, int]:
        """A kept row's cut ids and its text's whole length."""
        return self.flat[self.offsets[row] : self.offsets[row + 1]], int(self.lengths[row])

    def get(self, text: str) -> tuple[np.ndarray, int] | None:
        row = int(self.find([text])[0])
        return None if row < 0 else self.ids(row)


class BackendPairs:
    """Pair token ids made by a fast tokenizer's Rust backend directly: each distinct text of a call that is not
    kept encoded once without special tokens (`encode_batch`, in parallel), each pair assembled by the
    tokenizer's `PairTemplate`.

    Why by hand: `CrossEncoder.preprocess` tokenises every pair whole and pads the lot into tensors; on the
    sample world 163-173 us a pair in the teacher job's chunks, against 49-55 through the backend
    (docs/results.md). Raises ValueError when the tokenizer's pairs are not what `PairTemplate` assembles."""

    def __init__(self, tokenizer: Any, max_length: int):
        backend = tokenizer.backend_tokenizer
        self.plain = copy.deepcopy(backend)
        self.plain.no_truncation()
        self.plain.no_padding()
        left = getattr(tokenizer, "truncation_side", "right") == "left"
        pairs = copy.deepcopy(backend)
        pairs.no_padding()
        pairs.enable_truncation(max_length, strategy="longest_first", direction="left" if left else "right")
        self.template = PairTemplate.read(self.plain, max_length, left)
        if not self.template.agrees(self.plain, pairs):
            raise ValueError("its truncated pairs differ from what the pair template assembles")
        self.kept = KeptTexts()

    @staticmethod
    def usable(teacher: TeacherModel) -> bool:
        """An encoder without a prompt whose tokenizer has a Rust backend (else `preprocess` stays)."""
        tok = teacher.tokenizer
        return teacher.family == "encoder" and not teacher.prompt and bool(getattr(tok, "is_fast", False))

    def keep(self, texts: Sequence[str]) -> None:
        """Encode these texts now and keep their ids for every later call."""
        self.kept.add(texts, lambda b: self.plain.encode_batch(b, add_special_tokens=False), self.template)

    def encode(
        self, queries: Sequence[str], docs: Sequence[str]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        distinct = list(dict.fromkeys([*queries, *docs]))
        rows = self.kept.find(distinct) if len(self.kept) else np.full(len(distinct), -1)
        texts = [t for t, r in zip(distinct, rows, strict=True) if r < 0]
        known: dict[str, tuple[np.ndarray, int]] = {
            t: self.kept.ids(int(r)) for t, r in zip(distinct, rows, strict=True) if r >= 0
        }
        for text, e in zip(texts, self.plain.encode_batch(texts, add_special_tokens=False), strict=True):
            known[text] = (np.asarray(e.ids, np.int64), len(e.ids))

        ids: list[np.ndarray] = []
        types: list[np.ndarray] = []
        for q, d in zip(queries, docs, strict=True):
            (a, la), (b, lb) = known[q], known[d]
            pair_ids, pair_types = self.template.assemble(a, la, b, lb)
            ids.append(pair_ids)
            types.append(pair_types)
        return ids, types


def probe_pairs(queries: Sequence[str], docs: Sequence[str], max_length: int) -> tuple[list[str], list[str]]:
    """Pairs on which the two ways of tokenising must agree before the engine trusts the backend's: the job's
    first pairs, pairs whose query, document or both run past `max_length` (truncation), and text whose case,
    accents, spacing and punctuation a preprocessing step might change."""
    q = list(queries[:48])
    d = list(docs[:48])
    long_q = max(q, key=len) if q else "query"
    long_d = max(d, key=len) if d else "document"
    reps = 4 * max_length
    far_q = " ".join([long_q] * max(1, reps // max(1, len(long_q.split()))))
    far_d = " ".join([long_d] * max(1, reps // max(1, len(long_d.split()))))
    odd = "  Ünïcode CAPITALS, tabs\tand\nlines: don't (stop) -- 3.14 e-mail@x.org  "
    q += [far_q, long_q, far_q, odd, long_q, "a"]
    d += [long_d, far_d, far_d, long_d, odd, ""]
    return q, d
