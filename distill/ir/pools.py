"""Results of a thread or process pool in the order of their inputs, with a bounded number in flight; processes
forked from this one, which see what it holds without a copy."""

from __future__ import annotations

import contextlib
import gc
import multiprocessing as mp
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any


@contextlib.contextmanager
def forked_pool(workers: int) -> Iterator[Executor | None]:
    """`workers` processes forked from this one, or None where they cannot be: one worker, not Linux, or a
    daemon process (a Dask worker's) that may not start others. The caller then works here.

    For work that runs in Python under the interpreter's lock, where threads would take turns. A forked process
    starts with this one's memory as it is (an index built here is read there, not copied or pickled: pass it
    through a module global set before the first task), where a spawned one would import the caller's main
    module again, which breaks scripts without a `__main__` guard. This process's objects are frozen out of the
    collector meanwhile, so the processes' collections do not touch, and so copy, their pages."""
    if workers <= 1 or sys.platform != "linux" or mp.current_process().daemon:
        yield None
        return
    gc.freeze()
    try:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            yield pool
    finally:
        gc.unfreeze()


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
