"""Converters from common IR formats to the BEIR layout (see `distill.data.beir`).

    python -m distill.data.convert trec  SRC_DIR DEST_DIR docs=doc-text.trec topics=query-text.trec qrels=qrels
    python -m distill.data.convert smart SRC_DIR DEST_DIR docs=cacm.all queries=query.text qrels=qrels.text qrels_format=cacm

Formats without train/test splits get a deterministic query-level split (`test_fraction`, `split_seed`).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from distill.config import from_plain
from distill.data.beir import write_beir
from distill.data.schema import FlagEmbeddingOptions, HFOptions, MsMarcoOptions, SmartOptions, TrecOptions
from distill.errors import ConfigError, DataError
from distill.ir.split import held_out

Qrel = tuple[str, str, int]


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: invalid UTF-8 byte 0x{raw[e.start]:02x}. Re-encode the file as UTF-8"
        ) from e
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _norm_id(s: str) -> str:
    """Numeric ids lose leading zeros ("01" -> "1") so queries and qrels agree; other ids are kept."""
    s = s.strip()
    return str(int(s)) if s.isdigit() else s


def split_qrels(qrels: Iterable[Qrel], test_fraction: float, seed: int) -> dict[str, list[Qrel]]:
    """Deterministic query-level train/test split: a query's hash decides its split, independent of order."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ConfigError(f"data.test_fraction={test_fraction} must be within [0, 1]")
    qrels = list(qrels)
    qids = list(dict.fromkeys(q for q, _, _ in qrels))
    is_test = dict(zip(qids, held_out(qids, test_fraction, seed), strict=True))
    out: dict[str, list[Qrel]] = {"train": [], "test": []}
    for qid, docid, rel in qrels:
        out["test" if is_test[qid] else "train"].append((qid, docid, rel))
    return {k: v for k, v in out.items() if v}


# ----------------------------------------------------------------------------------------------------- TREC

_DOC_RE = re.compile(r"<DOC>(.*?)</DOC>", re.S | re.I)
_TAG_RE = re.compile(r"<[^>]+>")


def _tag(block: str, tag: str) -> str | None:
    m = re.search(rf"<{tag}>(.*?)(?:</{tag}>|(?=<[a-z]+>)|\Z)", block, re.S | re.I)
    return None if m is None else m.group(1).strip()


def parse_trec_docs(text: str, name: str = "docs") -> list[dict]:
    docs = []
    for i, m in enumerate(_DOC_RE.finditer(text)):
        block = m.group(1)
        docno = _tag(block, "DOCNO")
        if not docno:
            raise DataError(f"{name}: document #{i + 1} has no <DOCNO>")
        title = _tag(block, "TITLE") or _tag(block, "HEADLINE") or ""
        body_m = re.search(r"<TEXT>(.*?)</TEXT>", block, re.S | re.I)
        body = body_m.group(1) if body_m else re.sub(r"<DOCNO>.*?</DOCNO>", "", block, flags=re.S | re.I)
        body = re.sub(r"<(TITLE|HEADLINE)>.*?</\1>", "", body, flags=re.S | re.I)
        docs.append(
            {
                "_id": _norm_id(docno),
                "title": " ".join(_TAG_RE.sub(" ", title).split()),
                "text": " ".join(_TAG_RE.sub(" ", body).split()),
            }
        )
    if not docs:
        raise DataError(f"{name}: no <DOC> ... </DOC> blocks found; is this a TREC document file?")
    return docs


def parse_trec_topics(text: str, query_field: str = "title", name: str = "topics") -> list[dict]:
    out = []
    for i, m in enumerate(re.finditer(r"<top>(.*?)</top>", text, re.S | re.I)):
        block = m.group(1)
        num = _tag(block, "num")
        if not num:
            raise DataError(f"{name}: topic #{i + 1} has no <num>")
        num = re.sub(r"^(Number:)\s*", "", num, flags=re.I)
        parts = [(_tag(block, f) or "") for f in query_field.split("+")]
        parts = [re.sub(r"^(Description:|Topic:)\s*", "", p, flags=re.I) for p in parts]
        qtext = " ".join(" ".join(parts).split())
        out.append({"_id": _norm_id(num), "text": qtext.lower() if qtext.isupper() else qtext})
    if not out:
        raise DataError(f"{name}: no <top> ... </top> blocks found; is this a TREC topics file?")
    return out


def parse_trec_qrels(text: str, name: str = "qrels") -> list[Qrel]:
    rows = []
    for no, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            raise DataError(f"{name}:{no}: expected 'qid iter docid rel', got {line.strip()[:60]!r}")
        try:
            rel = int(parts[3])
        except ValueError as e:
            raise DataError(f"{name}:{no}: non-numeric relevance {parts[3]!r}") from e
        rows.append((_norm_id(parts[0]), _norm_id(parts[2]), rel))
    return rows


def convert_trec(src: Path, opts: TrecOptions) -> tuple[list[dict], list[dict], list[Qrel]]:
    docs = parse_trec_docs(_read_text(src / opts.docs), opts.docs)
    topics = parse_trec_topics(_read_text(src / opts.topics), opts.query_field, opts.topics)
    return docs, topics, parse_trec_qrels(_read_text(src / opts.qrels), opts.qrels)


# ---------------------------------------------------------------------------------------------------- SMART

_MONTHS = {
    m: i
    for i, m in enumerate(
        [
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        ],
        start=1,
    )
}


def parse_smart(text: str) -> list[dict[str, str]]:
    """SMART records: `.I id` starts a record, `.X` lines start fields; returns {"I": id, "T": ..., ...}."""
    records: list[dict[str, str]] = []
    cur: dict[str, list[str]] | None = None
    key = None
    for line in text.split("\n"):
        m = re.match(r"^\.([A-Z])(?:\s+(.*))?$", line.rstrip())
        if m and m.group(1) == "I":
            cur = {"I": [m.group(2) or ""]}
            records.append(cur)  # type: ignore[arg-type]
            key = "I"  # an id can wrap onto the next line (CACM has ".I 28" + "56" for document 2856)
        elif m and cur is not None:
            key = m.group(1)
            cur.setdefault(key, [])
            if m.group(2):
                cur[key].append(m.group(2))
        elif cur is not None and key is not None:
            cur[key].append(line)
    return [
        {k: ("" if k == "I" else "\n").join(v).strip() for k, v in r.items()}  # type: ignore[union-attr]
        for r in records
    ]


def _smart_date(b: str) -> str | None:
    """ "CACM December, 1958" -> "1958-12-01T00:00:00Z"; None when no month and year are found."""
    m = re.search(r"([A-Za-z]+)\s*,?\s*(\d{4})", b)
    if not m or m.group(1).lower() not in _MONTHS:
        return None
    return datetime(int(m.group(2)), _MONTHS[m.group(1).lower()], 1, tzinfo=timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def _citations(x_field: str, docid: str) -> int:
    """Documents citing `docid`: per CACM's cite.info, the co-citation (type 6) self-weight, listed as repeats."""
    n = 0
    for line in x_field.split("\n"):
        parts = line.split()
        if (
            len(parts) == 3
            and parts[1] == "6"
            and _norm_id(parts[0]) == docid
            and _norm_id(parts[2]) == docid
        ):
            n += 1
    return n


def convert_smart(src: Path, opts: SmartOptions) -> tuple[list[dict], list[dict], list[Qrel]]:
    docs = []
    for rec in parse_smart(_read_text(src / opts.docs)):
        did = _norm_id(rec["I"])
        doc: dict[str, Any] = {
            "_id": did,
            "title": " ".join(rec.get("T", "").split()),
            "text": " ".join(rec.get("W", "").split()),
        }
        if "B" in rec and (ts := _smart_date(rec["B"])):
            doc["timestamp"] = ts
        if "X" in rec:
            doc["popularity"] = _citations(rec["X"], did)
        docs.append(doc)
    if not docs:
        raise DataError(f"{src / opts.docs}: no '.I' records found; is this a SMART file?")
    queries = []
    for i, rec in enumerate(parse_smart(_read_text(src / opts.queries)), start=1):
        qid = str(i) if opts.sequential_query_ids else _norm_id(rec["I"])
        queries.append({"_id": qid, "text": " ".join(rec.get("W", "").split())})
    qrels = []
    for no, line in enumerate(_read_text(src / opts.qrels).splitlines(), start=1):
        p = line.split()
        if not p:
            continue
        try:
            if opts.qrels_format == "trec":
                qrels.append((_norm_id(p[0]), _norm_id(p[2]), int(p[3])))
            elif opts.qrels_format == "cranfield":
                code = int(p[2])
                qrels.append((_norm_id(p[0]), _norm_id(p[1]), 5 - code if 1 <= code <= 4 else 0))
            elif opts.qrels_format == "cacm":
                qrels.append((_norm_id(p[0]), _norm_id(p[1]), 1))
            else:
                raise ConfigError(
                    f"data.options.qrels_format={opts.qrels_format!r}: use trec, cranfield or cacm"
                )
        except (IndexError, ValueError) as e:
            raise DataError(
                f"{src / opts.qrels}:{no}: cannot parse {line.strip()[:60]!r} as {opts.qrels_format} qrels"
            ) from e
    return docs, queries, qrels


# -------------------------------------------------------------------------------------------- FlagEmbedding


def _passage_id(text: str) -> str:
    return "p" + hashlib.sha1(text.encode()).hexdigest()[:12]


def read_flagembedding(path: Path) -> list[dict]:
    """FlagEmbedding reranker lines {query, pos: [..], neg: [..], pos_scores?, neg_scores?}, validated."""
    out = []
    for no, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{no}: malformed JSON ({e.msg} at column {e.colno})") from e
        for key in ("query", "pos", "neg"):
            if key not in rec:
                raise DataError(f"{path}:{no}: missing key {key!r}; FlagEmbedding lines need query, pos, neg")
        for key in ("pos", "neg"):
            if f"{key}_scores" in rec and len(rec[f"{key}_scores"]) != len(rec[key]):
                raise DataError(
                    f"{path}:{no}: {key}_scores has {len(rec[key + '_scores'])} values for "
                    f"{len(rec[key])} passages"
                )
        rec["_line"] = no
        out.append(rec)
    return out


def flagembedding_ids(rec: dict) -> tuple[str, list[str], list[str]]:
    """(qid, positive docids, negative docids) of one FlagEmbedding record, ids derived from the texts."""
    return (
        _passage_id("q:" + rec["query"]).replace("p", "q", 1),
        [_passage_id(t) for t in rec["pos"]],
        [_passage_id(t) for t in rec["neg"]],
    )


def convert_flagembedding(src: Path, opts: FlagEmbeddingOptions) -> tuple[list[dict], list[dict], list[Qrel]]:
    docs: dict[str, dict] = {}
    queries: dict[str, dict] = {}
    qrels = []
    for rec in read_flagembedding(src / opts.file):
        qid, pos, neg = flagembedding_ids(rec)
        queries[qid] = {"_id": qid, "text": rec["query"]}
        for did, text in zip(pos + neg, rec["pos"] + rec["neg"], strict=True):
            docs.setdefault(did, {"_id": did, "title": "", "text": text})
        qrels += [(qid, d, 1) for d in pos]
    return list(docs.values()), list(queries.values()), qrels


# ---------------------------------------------------------------------------------------------- MS MARCO TSV


def _tsv_pairs(path: Path) -> Iterable[tuple[int, str, str]]:
    for no, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise DataError(f"{path}:{no}: expected 'id<TAB>text'")
        yield no, parts[0].strip(), parts[1].strip()


def convert_msmarco(src: Path, opts: MsMarcoOptions) -> tuple[list[dict], list[dict], dict[str, list[Qrel]]]:
    docs = [{"_id": pid, "title": "", "text": text} for _, pid, text in _tsv_pairs(src / opts.collection)]
    queries: dict[str, dict] = {}
    for f in opts.queries.values():
        for _, qid, text in _tsv_pairs(src / f):
            queries[qid] = {"_id": qid, "text": text}
    qrels = {split: parse_trec_qrels(_read_text(src / f), f) for split, f in opts.qrels.items()}
    return docs, list(queries.values()), qrels


# ------------------------------------------------------------------------------------ Hugging Face datasets


def _hf_load(spec: dict[str, Any], what: str) -> Any:
    import datasets  # heavy import, only here

    if "path" not in spec:
        raise ConfigError(f"data.options.{what} needs a `path` (a hub id such as BeIR/scifact, or 'json')")
    kwargs = {k: v for k, v in spec.items() if k != "path"}
    try:
        return datasets.load_dataset(spec["path"], **kwargs)
    except Exception as e:  # network, missing config, bad files: all user-fixable
        raise DataError(
            f"data.options.{what}: could not load {spec['path']!r} ({type(e).__name__}: {e})"
        ) from e


def convert_hf(opts: HFOptions) -> tuple[list[dict], list[dict], dict[str, list[Qrel]]]:
    """A BEIR-style dataset from the Hugging Face hub (or local files through `path: json`)."""
    corpus = _hf_load(opts.corpus, "corpus")
    queries = _hf_load(opts.queries, "queries")
    docs = [
        {
            "_id": str(r["_id"]),
            "title": r.get("title") or "",
            "text": r.get("text") or "",
            **({"timestamp": r["timestamp"]} if r.get("timestamp") else {}),
        }
        for r in corpus
    ]
    qs = [{"_id": str(r["_id"]), "text": r.get("text") or ""} for r in queries]
    qrels = {}
    for split, spec in opts.qrels.items():
        rows = _hf_load(spec, f"qrels.{split}")
        qrels[split] = [(str(r["query-id"]), str(r["corpus-id"]), int(r["score"])) for r in rows]
    return docs, qs, qrels


# ------------------------------------------------------------------------------------------------- dispatch

CONVERTERS: dict[str, tuple[type, Callable[..., Any]]] = {
    "trec": (TrecOptions, convert_trec),
    "smart": (SmartOptions, convert_smart),
    "flagembedding": (FlagEmbeddingOptions, convert_flagembedding),
    "msmarco": (MsMarcoOptions, convert_msmarco),
    "hf": (HFOptions, lambda src, o: convert_hf(o)),
}


def convert(
    fmt: str,
    src: str | Path,
    dest: str | Path,
    options: Any = None,
    test_fraction: float = 0.5,
    split_seed: int = 0,
) -> dict[str, Any]:
    """Convert `src` (format `fmt`) into a BEIR folder at `dest`; returns counts of what was written."""
    if fmt not in CONVERTERS:
        raise ConfigError(
            f"data.format={fmt!r} has no converter; known: {sorted(CONVERTERS)} (and beir, sample)"
        )
    opt_cls, fn = CONVERTERS[fmt]
    opts = (
        options
        if isinstance(options, opt_cls)
        else from_plain(opt_cls, options, f"data.options (format {fmt!r})")
    )
    src = Path(src)
    if fmt != "hf" and not src.is_dir():
        raise DataError(f"{src}: source folder not found (data.path)")
    docs, queries, qrels = fn(src, opts)
    if not isinstance(qrels, dict):
        qrels = split_qrels(qrels, test_fraction, split_seed)
    _check_unique(docs, "document")
    _check_unique(queries, "query")
    write_beir(dest, docs, queries, qrels)
    return {"docs": len(docs), "queries": len(queries), **{f"qrels/{s}": len(r) for s, r in qrels.items()}}


def _check_unique(rows: list[dict], kind: str) -> None:
    dup = [k for k, n in Counter(r["_id"] for r in rows).items() if n > 1]
    if dup:
        raise DataError(f"{len(dup)} duplicate {kind} id(s) in the source, e.g. {dup[:3]}")


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m distill.data.convert",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("format", help="trec | smart | flagembedding | msmarco | hf")
    ap.add_argument("src", help="the source files' folder")
    ap.add_argument("dest", help="the BEIR folder to write")
    ap.add_argument("options", nargs="*", metavar="KEY=VALUE", help="format options, e.g. docs=doc-text.trec")
    args = ap.parse_args(argv)
    options: dict[str, Any] = dict(item.partition("=")[::2] for item in args.options)
    try:
        counts = convert(args.format, args.src, args.dest, options)
    except (DataError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
