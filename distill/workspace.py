"""The workspace folder through which stages exchange files, with fixed names (see README, "Pipeline")."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from distill.errors import StageNotReadyError


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def from_cfg(cls, cfg: Any) -> Workspace:
        root = Path(cfg.paths.workspace).resolve()
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    @property
    def candidates(self) -> Path:
        return self.root / "candidates.parquet"

    @property
    def soft_labels(self) -> Path:
        return self.root / "soft_labels"

    @property
    def features(self) -> Path:
        return self.root / "features.parquet"

    def model(self, name: str) -> Path:
        return self.root / "models" / name

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    def require(self, path: Path, stage: str) -> Path:
        """`path`, or a clear error saying which stage produces it."""
        if not path.exists():
            raise StageNotReadyError(
                f"{path} not found: run `make {stage}` first (with the same data= and "
                f"paths.workspace= overrides)"
            )
        return path


def write_parquet_atomic(df: pd.DataFrame, path: Path, **kwargs: Any) -> None:
    """Write to a temp file and rename, so readers never see a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    df.to_parquet(tmp, index=False, **kwargs)
    os.replace(tmp, path)


def write_json_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
