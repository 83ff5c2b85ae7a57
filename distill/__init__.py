"""distill: distil cross-encoder rerankers into fast rankers."""

import os

import pyarrow

__version__ = "0.1.0"

# Arrow's buffers (every Parquet and JSON read, pandas' string columns) through the C library's allocator, unless
# the user chose a pool (ARROW_DEFAULT_MEMORY_POOL). Arrow's bundled mimalloc keeps the pages it frees: loading
# the 100x sample world's dataset left 336-392 MiB resident against 220-231 MiB, and took 4.8 s against 2.9-3.6 s
# (docs/results.md, session 30); each stage's peak sits on what the reading left behind. The pool's
# `release_unused` (`workspace.release_arrow_memory`) is then glibc's `malloc_trim`.
if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
    pyarrow.set_memory_pool(pyarrow.system_memory_pool())
