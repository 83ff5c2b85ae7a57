"""Results of a thread or process pool in the order of their inputs, with a bounded number in flight."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from typing import Any


def ordered_submit(
    pool: Executor, fn: Callable[..., Any], items: Iterable[Any], window: int
) -> Iterator[Any]:
    """`fn(item)` on the pool, results in the items' order, at most `window` in flight: the items are drawn
    lazily (`Executor.map` submits them all at once, so a corpus's chunks would all be in memory)."""
    pending: deque[Any] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
