"""Fault injection for crash tests: `DISTILL_KILL_AT=point:n` kills the process (SIGKILL, no clean-up) the n-th
time execution reaches `point`. Points in the scoring job: `before_rename` (a shard's temp file written and
fsynced, not yet renamed), `after_rename` (part renamed, manifest not yet updated), `after_manifest`; in every
folder written whole (`distill.workspace.staged_dir`): `staged_written` (the new folder complete beside the old one),
`staged_between_renames` (the old folder moved aside, the new one not yet in place).
Unset (always, outside tests), it costs one environment lookup per shard.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_hits: Counter[str] = Counter()


def kill_point(point: str) -> None:
    spec = os.environ.get("DISTILL_KILL_AT")
    if not spec:
        return
    where, _, n = spec.partition(":")
    if where != point:
        return
    _hits[point] += 1
    if _hits[point] >= int(n or 1):
        os.kill(os.getpid(), signal.SIGKILL)
