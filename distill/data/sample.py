"""The embedded sample world: a synthetic search collection generated deterministically in seconds.

It is built so that the ranking signals the framework exploits matter the way they do in real search:

- Vocabulary mismatch. Every concept has the word documents use and an alias that queries use instead (70% of
  the time): an unrelated word that no document holds, so neither BM25 over words nor BM25 over sub-words can
  match it. Only the training queries tell which document word an alias stands for; with 20 topics of 10
  concepts each alias recurs in about four of them, so a ranker trained on the train split can learn it and
  clearly beats lexical matching. (`p_morph` > 0 makes some aliases morphological variants instead: the document
  word plus a suffix no stemmer strips, which a WordPiece tokenizer splits back into the document word; version
  3 of the world had 70% of those and 120 topics, and BM25 over sub-words ranked above the teacher.)
- Ambiguity. Some document words belong to two topics, and half the topics share their broad word with another,
  so exact term matches also pull in off-topic documents that only the rest of the query tells apart.
- Freshness. Documents have timestamps; some queries ask for recent material ("latest ..."), and for those,
  documents older than `fresh_days` at the query's time lose one relevance grade.
- Behaviour. A click log from a position-based click model over a (lightly shuffled) logged BM25 ranking:
  noisy, position-biased clicks with dwell times (`distill.data.clicks`).
- Intents (off unless `n_intents` > 0). Each document is of one intent, written with a few marker words; a query
  may ask for an intent by a word no document holds, and then only documents of that intent are relevant: an
  association between words that only the training queries teach.

Relevance is graded: 2 when a document of the query's topic covers every concept the query asks about,
1 when it covers some of them, 0 otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distill.data.beir import load_beir, write_jsonl, write_qrels
from distill.data.schema import SampleOptions

_CONS = list("bdfgklmnprstvz") + ["ch", "sh", "tr", "st"]
_VOWS = ["a", "e", "i", "o", "u", "ai", "ou"]
FRESH_WORDS = ["latest", "newest", "recent", "current"]
_SUFFIXES = ["ox", "iq", "uv", "eth", "azo", "imo"]
_ENDS = ["", "n", "r", "l", "x"]
MARKERS = 3  # marker words per intent
MAX_FOCUS = 4  # concepts a document focuses on: 2 to this many
CHUNK_DOCS = 10_000  # documents drawn before their timestamps are made and they are written


def _cdf(p: Any) -> np.ndarray:
    """The cumulative weights that `Generator.choice(..., p=p)` draws with."""
    cdf = np.cumsum(np.asarray(p, dtype=float))
    return cdf / cdf[-1]


_SYLLABLES = _cdf([0.45, 0.55])  # 2 or 3 syllables a word
_ASKED = _cdf([0.3, 0.5, 0.2])  # 1, 2 or 3 concepts a query


def _pick(rng: np.random.Generator, cdf: np.ndarray, size: Any = None) -> Any:
    """Indices drawn by the weights of `cdf`, exactly as `rng.choice(len(cdf), size, p=...)` draws them (one
    uniform number each, found in the cumulative weights), without checking the weights again at every call:
    the generator calls this once or twice per document, and that check was most of its time."""
    return cdf.searchsorted(rng.random(size), side="right")


def _one(rng: np.random.Generator, items: list[str]) -> str:
    """One of `items`, drawn as `rng.choice(items)` draws it, without turning the list into an array first."""
    return items[int(rng.integers(0, len(items), dtype=np.int64))]


def _any(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """`size` indices below n drawn with replacement, as `rng.choice(n, size)` draws them."""
    return rng.integers(0, n, size=size, dtype=np.int64)


def _words(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    """n new pronounceable pseudo-words of 2-3 syllables, none in `taken`."""
    out: list[str] = []
    while len(out) < n:
        k = 2 + int(_pick(rng, _SYLLABLES))
        w = "".join(_one(rng, _CONS) + _one(rng, _VOWS) for _ in range(k)) + _one(rng, _ENDS)
        if w not in taken and w not in FRESH_WORDS:
            taken.add(w)
            out.append(w)
    return out


@dataclass
class World:
    doc_word: np.ndarray  # concept -> document word
    synonyms: list[list[str]]  # concept -> query synonyms
    topic_concepts: list[np.ndarray]  # topic -> concept ids (its own, plus ambiguous words' concepts)
    background: np.ndarray  # of str
    background_cdf: np.ndarray  # how often documents and queries use each background word (`_pick`)
    topic_word: np.ndarray  # topic -> its broad word (shared by two topics for some topics)
    intent_markers: np.ndarray | None = None  # intent -> the words its documents use (intents x MARKERS)
    intent_word: np.ndarray | None = None  # intent -> the word queries ask for it with (no document has it)


def _build_world(o: SampleOptions, rng: np.random.Generator) -> World:
    taken: set[str] = set()
    n_concepts = o.n_topics * o.concepts_per_topic
    doc_word = np.array(_words(rng, n_concepts, taken), dtype=object)
    # Ambiguous concepts reuse another topic's document word (BM25 cannot tell the two apart).
    amb = rng.random(n_concepts) < o.p_ambiguous
    for c in np.flatnonzero(amb):
        other = rng.integers(n_concepts)
        if other // o.concepts_per_topic != c // o.concepts_per_topic:
            doc_word[c] = doc_word[other]
    # A concept's query synonyms: mostly morphological variants (the document word plus a suffix that
    # stemmers do not strip, so BM25 misses them while a subword tokenizer sees the shared stem), sometimes
    # unrelated words (true synonyms, which only training data can teach).
    synonyms = []
    for ci in range(n_concepts):
        if rng.random() < o.p_morph:
            syn = [str(doc_word[ci]) + str(rng.choice(_SUFFIXES))]
        else:
            syn = _words(rng, 1, taken)
        taken.update(syn)
        synonyms.append(syn)
    topic_concepts = [
        np.arange(t * o.concepts_per_topic, (t + 1) * o.concepts_per_topic) for t in range(o.n_topics)
    ]
    background = _words(rng, o.n_background, taken)
    p = 1.0 / np.arange(1, o.n_background + 1) ** 1.1
    topic_word = np.array(_words(rng, o.n_topics, taken), dtype=object)
    for t in np.flatnonzero(rng.random(o.n_topics) < o.p_ambiguous_topic):
        topic_word[t] = topic_word[rng.integers(o.n_topics)]
    world = World(
        doc_word, synonyms, topic_concepts, np.array(background, dtype=object), _cdf(p / p.sum()), topic_word
    )
    if o.n_intents:  # drawn last: a world without intents draws exactly what it did before they existed
        markers = _words(rng, o.n_intents * MARKERS, taken)
        world.intent_markers = np.array(markers, dtype=object).reshape(o.n_intents, MARKERS)
        world.intent_word = np.array(_words(rng, o.n_intents, taken), dtype=object)
    return world


def _docs(
    o: SampleOptions, w: World, rng: np.random.Generator, corpus: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Documents, written to `corpus` (JSONL) as they are drawn, `CHUNK_DOCS` at a time: no record or text is
    held. Returns (topic per doc; focus concepts per doc, one row each padded with -1; day of each document since
    `o.start`; intent per doc, -1 without intents)."""
    topic_p = rng.dirichlet(np.full(o.n_topics, 2.0))
    topics = rng.choice(o.n_topics, size=o.n_docs, p=topic_p)
    start = pd.Timestamp(o.start, tz="UTC")
    span_days = (pd.Timestamp(o.cutoff, tz="UTC") - start).days
    days = rng.integers(0, span_days, size=o.n_docs)
    base = np.datetime64(start.tz_localize(None), "s")
    focus_of = np.full((o.n_docs, MAX_FOCUS), -1, dtype=np.int64)
    intents = np.full(o.n_docs, -1, dtype=np.int64)
    seconds = np.empty(o.n_docs, dtype=np.int64)

    def records() -> Iterator[dict]:
        pending: list[dict] = []
        for i, t in enumerate(topics):
            concepts = w.topic_concepts[t]
            focus = rng.choice(concepts, size=rng.integers(2, MAX_FOCUS + 1), replace=False)
            length = int(min(max(rng.lognormal(np.log(45), 0.5), 12), 300))
            n_focus = max(3, int(length * rng.uniform(0.2, 0.35)))
            n_topic = max(1, int(length * 0.1))
            n_noise = rng.integers(0, 3)
            toks = [w.topic_word[t]] * int(rng.integers(1, 4))
            toks += list(w.doc_word[focus[_any(rng, len(focus), n_focus)]])
            toks += list(w.doc_word[concepts[_any(rng, len(concepts), n_topic)]])
            toks += list(w.doc_word[rng.integers(0, len(w.doc_word), size=n_noise)])
            toks += list(w.background[_pick(rng, w.background_cdf, length - len(toks))])
            if w.intent_markers is not None:
                intents[i] = rng.integers(len(w.intent_markers))
                toks += list(w.intent_markers[intents[i]][_any(rng, MARKERS, int(rng.integers(2, 5)))])
            rng.shuffle(toks)
            title = list(
                w.doc_word[rng.choice(focus, size=min(len(focus), int(rng.integers(1, 4))), replace=False)]
            )
            title += list(w.background[_pick(rng, w.background_cdf, rng.integers(1, 3))])
            seconds[i] = rng.integers(86400)
            record = {"_id": f"d{i}", "title": " ".join(title), "text": " ".join(toks)}
            pending.append(record)
            focus_of[i, : len(focus)] = focus
            if len(pending) == CHUNK_DOCS or i == o.n_docs - 1:  # the chunk's timestamps, then its records
                first = i + 1 - len(pending)
                stamps = base + days[first : i + 1] * 86400 + seconds[first : i + 1]
                for r, ts in zip(pending, np.datetime_as_string(stamps, unit="s"), strict=True):
                    r["timestamp"] = f"{ts}Z"
                    yield r
                pending = []

    write_jsonl(corpus, records())
    return topics, focus_of, days, intents


def _queries(
    o: SampleOptions,
    w: World,
    rng: np.random.Generator,
    doc_topics: np.ndarray,
    focus: np.ndarray,
    doc_days: np.ndarray,
    doc_intents: np.ndarray,
) -> tuple[list[dict], np.ndarray, list[str]]:
    """Queries with graded qrels. Returns (records, qrels as rows of query number, document number and grade,
    split per query)."""
    n = o.n_train + o.n_test
    by_topic = [np.flatnonzero(doc_topics == t) for t in range(o.n_topics)]
    # Concept popularity in queries follows how often documents focus on it (head and tail concepts).
    focused = np.bincount(focus[focus >= 0], minlength=len(w.doc_word))
    asked_from = []  # per topic: the concepts some document focuses on, and how likely a query asks each
    for concepts in w.topic_concepts:
        cands = [c for c in concepts if focused[int(c)] >= 1]
        weights = np.array([focused[int(c)] for c in cands], dtype=float)
        asked_from.append((cands, weights / weights.sum() if cands else weights))
    cutoff = pd.Timestamp(o.cutoff, tz="UTC")
    start = pd.Timestamp(o.start, tz="UTC")
    records: list[dict] = []
    qrels: list[np.ndarray] = [np.zeros((0, 3), dtype=np.int64)]
    splits: list[str] = []
    while len(records) < n:
        split = "train" if len(records) < o.n_train else "test"
        topic = int(rng.integers(o.n_topics))
        docs_t = by_topic[topic]
        if len(docs_t) < 3:
            continue
        cands, weights = asked_from[topic]
        k = int(min(len(cands), 1 + _pick(rng, _ASKED)))
        if k == 0:
            continue
        asked = rng.choice(cands, size=k, replace=False, p=weights)
        words = []
        for c in asked:
            if rng.random() < o.p_synonym:
                words.append(_one(rng, w.synonyms[int(c)]))
            else:
                words.append(str(w.doc_word[c]))
        words += list(w.background[_pick(rng, w.background_cdf, rng.integers(0, 3))])
        if rng.random() < o.p_topic_word:
            words.append(str(w.topic_word[topic]))
        fresh = rng.random() < o.p_fresh_query
        if fresh:
            words.insert(0, _one(rng, FRESH_WORDS))
        intent = -1
        if w.intent_word is not None and rng.random() < o.p_intent_query:
            intent = int(rng.integers(len(w.intent_word)))
            words.append(str(w.intent_word[intent]))
        # Train queries come from the months before the cut-off, test queries from the months after it.
        offset = int(rng.integers(0, 90 * 86400))
        qtime = (
            cutoff - pd.Timedelta(seconds=offset + 1)
            if split == "train"
            else cutoff + pd.Timedelta(seconds=offset)
        )
        qday = (qtime - start).days
        # per document of the topic: how many of the (distinct) asked concepts it focuses on
        hit = np.isin(focus[docs_t], asked).sum(axis=1)
        grade = np.where(hit == len(asked), 2, np.where(hit > 0, 1, 0))
        if fresh:
            grade = np.where((grade > 0) & (qday - doc_days[docs_t] > o.fresh_days), grade - 1, grade)
        if intent >= 0:
            grade = np.where(doc_intents[docs_t] != intent, 0, grade)
        kept = (grade > 0) & (doc_days[docs_t] <= qday)
        if not kept.any() or not (grade[kept] == 2).any() and rng.random() < 0.7:
            continue
        qid = f"q{len(records)}"
        rng.shuffle(words)
        records.append(
            {"_id": qid, "text": " ".join(words), "timestamp": qtime.strftime("%Y-%m-%dT%H:%M:%SZ")}
        )
        qrels.append(np.column_stack([np.full(int(kept.sum()), len(records) - 1), docs_t[kept], grade[kept]]))
        splits.append(split)
    return records, np.concatenate(qrels), splits


def generate(dest: str | Path, opts: SampleOptions | None = None) -> dict[str, Any]:
    """Write the sample world in BEIR layout (plus `logs/impressions.parquet`) into `dest`. The documents are
    written as they are drawn and the judgements are held as integers, so memory holds a few numbers per
    document, not their records or texts (the logged BM25 ranking reads them again from corpus.jsonl)."""
    from distill.data.clicks import click_batches, logged_ranking, write_log
    from distill.workspace import release_arrow_memory

    o = opts or SampleOptions()
    rng = np.random.default_rng(o.seed)
    world = _build_world(o, rng)
    dest = Path(dest)
    (dest / "qrels").mkdir(parents=True, exist_ok=True)
    doc_topics, focus, doc_days, doc_intents = _docs(o, world, rng, dest / "corpus.jsonl")
    queries, qrels, splits = _queries(o, world, rng, doc_topics, focus, doc_days, doc_intents)
    del doc_topics, focus, doc_days, doc_intents
    is_train = np.array([s == "train" for s in splits], dtype=bool)[qrels[:, 0]]
    write_jsonl(dest / "queries.jsonl", queries)
    write_qrels(
        dest,
        {
            split: ((f"q{q}", f"d{d}", g) for q, d, g in qrels[rows].tolist())
            for split, rows in (("train", is_train), ("test", ~is_train))
        },
    )

    # The logged ranking: BM25 top 10 of every query, as the production system would have shown it, over the
    # documents' title and text read again from corpus.jsonl as they are tokenised (never held at once).
    written = load_beir(dest, texts=False)
    n_docs = len(written.corpus)
    logged = logged_ranking(
        [f"d{i}" for i in range(n_docs)],
        written.lazy_doc_texts(),
        [q["_id"] for q in queries],
        [q["text"] for q in queries],
        10,
        stemmer=None,
    )
    del written
    # The click model asks only the logged pairs' grades: the judgements of other pairs are not made strings (at
    # 100x, 2M judgements against the few hundred thousand the logged ranking shows).
    n_qrels = len(qrels)
    q_shown, d_shown = (logged[c].str[1:].astype(np.int64).to_numpy() for c in ("qid", "docid"))
    qrels = qrels[np.isin(qrels[:, 0] * n_docs + qrels[:, 1], q_shown * n_docs + d_shown)]
    del q_shown, d_shown
    release_arrow_memory()  # the ranking's index, freed, back to the system before the click log
    qrels_df = pd.DataFrame(
        {
            "qid": np.char.add("q", qrels[:, 0].astype(str)).astype(object),
            "docid": np.char.add("d", qrels[:, 1].astype(str)).astype(object),
            "relevance": qrels[:, 2],
        }
    )
    batches = click_batches(
        logged,
        qrels_df,
        sessions_per_query=o.sessions_per_query,
        seed=o.seed,
        start=o.log_start,
        end=o.cutoff,
    )
    impressions, clicks = write_log(dest, batches)
    info = {
        "docs": n_docs,
        "queries": len(queries),
        "train_queries": splits.count("train"),
        "test_queries": splits.count("test"),
        "qrels": n_qrels,
        "impressions": impressions,
        "clicks": clicks,
        "log_cutoff": o.cutoff,
        "fresh_queries": sum(
            q["text"].split()[0] in FRESH_WORDS or any(f in q["text"].split() for f in FRESH_WORDS)
            for q in queries
        ),
    }
    (dest / "README.md").write_text(
        "Generated by distill.data.sample (do not edit; regenerate with `make data`).\n\n"
        "Click log: SIMULATED clicks (position-based model over a logged BM25 ranking).\n\n"
        + "```json\n"
        + json.dumps(info, indent=1)
        + "\n```\n"
    )
    return info
