"""Bad-row handling shared by every reader: raise at the first bad row, or drop it and count it by reason."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from distill.errors import ConfigError, DataError

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "drop")


@dataclass
class Quarantine:
    """Collects bad rows. With on_error="raise" the first one raises a `DataError` naming file, line and fix."""

    on_error: str = "raise"
    rows: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise ConfigError(f"data.on_error={self.on_error!r} is not one of {ON_ERROR}")

    def bad(self, file: str, line: int | None, reason: str, detail: str, fix: str) -> None:
        where = f"{file}:{line}" if line is not None else file
        if self.on_error == "raise":
            raise DataError(
                f"{where}: {detail}. {fix} (or set data.on_error=drop to drop such rows and count them)"
            )
        self.rows.append({"file": file, "line": line, "reason": reason, "detail": detail})

    def counts(self) -> dict[str, int]:
        return dict(Counter(f"{r['file']}: {r['reason']}" for r in self.rows))

    def summary(self) -> str:
        if not self.rows:
            return "no rows dropped"
        parts = [f"{n} x {key}" for key, n in sorted(self.counts().items())]
        return f"dropped {len(self.rows)} bad rows: " + "; ".join(parts)

    def report(self) -> None:
        if self.rows:
            log.warning(self.summary())
