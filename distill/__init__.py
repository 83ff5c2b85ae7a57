"""distill: distil cross-encoder rerankers into fast rankers."""

import os

import pyarrow

__version__ = "0.1.0"

# Arrow's buffers (every Parquet and JSON read, pandas' string columns) through the C library's allocator, unless
# the user chose a pool (ARROW_DEFAULT_MEMORY_POOL). Arrow's bundled mimalloc keeps the pages it frees: loading
# the 100x sample world's dataset left 336-392 MiB resident against 220-223 MiB, and took 4.8 s against 2.9 s
# (docs/results.md, session 30), and each stage's peak sits on what the reading left behind.
if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
    pyarrow.set_memory_pool(pyarrow.system_memory_pool())
