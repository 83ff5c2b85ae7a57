"""Turn `cfg.data` into a validated `Dataset`: generate the sample world, convert other formats, or read BEIR.

Converted and generated folders are cached under `paths.data_root` with a stamp of what produced them; they
are rebuilt when the source files or the options change.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from distill.config import from_plain, to_container, validate
from distill.data.beir import Dataset, load_beir
from distill.data.schema import DATA_OPTIONS, SampleOptions
from distill.errors import ConfigError
from distill.ir import fingerprint
from distill.ir.split import held_out
from distill.workspace import staged_dir

log = logging.getLogger(__name__)

STAMP = ".distill-source.json"
FORMATS = tuple(DATA_OPTIONS)


def _fingerprint(src: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """What a converted folder is built from: the source files' content (a hub dataset: its name) and options."""
    return {"source": fingerprint.of_path(src) or str(src), **extra}


def _fresh(dest: Path, stamp: dict[str, Any]) -> bool:
    f = dest / STAMP
    return f.is_file() and json.loads(f.read_text()) == json.loads(json.dumps(stamp))


def _build(dest: Path, stamp: dict[str, Any], build) -> None:
    """Build into a temp folder next to `dest`, then swap it in, so a crash never leaves a half dataset. An
    existing `dest` is replaced only if the project made it; anything else is refused."""
    with staged_dir(dest, "data.name (or data.path)") as tmp:
        build(tmp)
        (tmp / STAMP).write_text(json.dumps(stamp, indent=1))


def data_options(d: DictConfig) -> Any:
    """data.options as its format's typed options (DATA_OPTIONS): a `<format>_data_schema` YAML has typed them
    already; a YAML on the plain `data_schema` gets them checked here."""
    cls = DATA_OPTIONS[d.format]
    node = d.options
    if isinstance(node, DictConfig) and OmegaConf.get_type(node) not in (dict, None):
        opts = OmegaConf.to_object(node)
        if not isinstance(opts, cls):
            raise ConfigError(
                f"data.format={d.format!r} but data.options are {type(opts).__name__}; a {d.format} dataset's "
                f"YAML starts with `defaults: [{d.format}_data_schema]`"
            )
        return opts
    return from_plain(cls, to_container(node), f"data.options (format {d.format!r})")


def dataset_dir(cfg: DictConfig) -> Path:
    """The BEIR folder that `cfg.data` resolves to, generating or converting it first when needed."""
    validate(cfg)
    d = cfg.data
    if d.format not in FORMATS:
        raise ConfigError(f"data.format={d.format!r} is not one of {FORMATS}")
    opts = data_options(d)
    options = to_container(d.options) or {}
    if d.format == "beir":
        return Path(d.path)
    if d.format == "sample":
        from distill.data.sample import generate

        dest = Path(d.path)
        stamp = {"generator": "sample", "version": SampleOptions.VERSION, **opts.__dict__}
        if not _fresh(dest, stamp):
            log.info("generating the sample world into %s", dest)
            _build(dest, stamp, lambda tmp: generate(tmp, opts))
        return dest
    from distill.data.convert import convert

    src = Path(d.path)
    dest = Path(cfg.paths.data_root) / d.name
    stamp = _fingerprint(
        src,
        {
            "format": d.format,
            "options": options,
            "test_fraction": d.test_fraction,
            "split_seed": d.split_seed,
        },
    )
    if not _fresh(dest, stamp):
        log.info("converting %s (%s) into %s", src, d.format, dest)
        _build(dest, stamp, lambda tmp: convert(d.format, src, tmp, opts, d.test_fraction, d.split_seed))
    return dest


def load_dataset(cfg: DictConfig, texts: bool = True) -> Dataset:
    """The configured dataset (`load_beir`); `texts=False` for a stage that reads the corpus's texts only in
    order, to tokenise them: they are read from corpus.jsonl then, never held."""
    ds = load_beir(dataset_dir(cfg), name=cfg.data.name, on_error=cfg.data.on_error, texts=texts)
    if "train" not in ds.qrels and "test" in ds.qrels:
        split_test(ds, float(cfg.data.test_fraction), int(cfg.data.split_seed))
    return ds


def split_test(ds: Dataset, test_fraction: float, seed: int) -> None:
    """A dataset judged on a test split only (most of BEIR) gets the converters' deterministic query split: a
    query's hash puts it in test (`test_fraction`) or train. Nothing is written; the log says so."""
    test = ds.qrels["test"]
    qids = test.qid.unique()
    in_test = pd.Series(held_out(qids, test_fraction, seed), index=qids)
    mask = test.qid.map(in_test).to_numpy(bool)
    if mask.all() or not mask.any():
        return  # test_fraction 0 or 1: keep the split as it is
    ds.qrels = {
        **ds.qrels,
        "train": test[~mask].reset_index(drop=True),
        "test": test[mask].reset_index(drop=True),
    }
    log.warning(
        "dataset %r has no train split: %d of its %d judged test queries go to train by a hash of the query id "
        "(data.test_fraction=%s, data.split_seed=%d); add qrels/train.tsv to choose them yourself",
        ds.name,
        int((~in_test).sum()),
        len(qids),
        test_fraction,
        seed,
    )
