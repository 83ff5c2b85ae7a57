"""`make data`: generate or convert the configured dataset, validate it and print its statistics."""

from __future__ import annotations

import json
from typing import Any

from omegaconf import DictConfig

from distill.data.beir import load_beir
from distill.data.prepare import dataset_dir


def run(cfg: DictConfig) -> dict[str, Any]:
    path = dataset_dir(cfg)
    # every record is checked as it is read; the statistics need no text, so the corpus holds none
    ds = load_beir(path, name=cfg.data.name, on_error=cfg.data.on_error, texts=False)
    stats = ds.stats()
    if ds.quarantine.rows:
        stats["dropped"] = ds.quarantine.counts()
    print(f"data {cfg.data.name}: {path}\n{json.dumps(stats, indent=1)}")
    return stats
