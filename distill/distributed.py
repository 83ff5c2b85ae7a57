"""Which process am I? One view of the launch, whether plain `python`, `accelerate launch`, `torchrun` or `mpirun`.

    ranks = process_ranks()
    if ranks.world > 1: ...   # e.g. `accelerate launch --multi_gpu --num_processes 8 scripts/teacher_score.py`
    ranks.barrier()

Ranks come from the launcher's environment: RANK / WORLD_SIZE / LOCAL_RANK (torchrun, `accelerate launch
--multi_gpu`, which also starts CPU processes on a machine without a GPU) or the MPI variables (mpirun, which
`accelerate launch --cpu --num_processes N` uses). A plain run is rank 0 of 1 and never touches torch.distributed.
These are the variables accelerate's `get_cpu_distributed_information` reads (a test holds the two to the same
answers); it is not imported here because importing accelerate (which imports torch) adds ~2 s to every stage,
also those that never use torch (candidates, features), and `PartialState()` would create a process group.

Reading the ranks sets nothing up: the Hugging Face trainers create their own process group (NCCL on GPUs, gloo
on CPU) for DDP. `barrier()` uses the group that exists, or creates a gloo group, which needs no GPU and allows
several ranks on one GPU (NCCL does not). Its timeout is long: ranks that finish their share of a scoring run
early wait at the final barrier for the slowest one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

BARRIER_TIMEOUT = timedelta(hours=12)
# (rank, world size, local rank) variables of each launcher family
LAUNCHER_VARS = (
    ("RANK", "WORLD_SIZE", "LOCAL_RANK"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_LOCAL_RANK"),
)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (a no-op in a plain run)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", "29500")
            dist.init_process_group(
                "gloo", init_method="env://", rank=self.rank, world_size=self.world, timeout=BARRIER_TIMEOUT
            )
        dist.barrier()

    def device(self, requested: str) -> str:
        """`auto` becomes this process's own GPU (cuda:LOCAL_RANK, wrapping round when there are more processes
        than GPUs); anything else is used as given."""
        import torch

        if requested != "auto" or self.world == 1 or not torch.cuda.is_available():
            return requested
        return f"cuda:{self.local_rank % torch.cuda.device_count()}"


@lru_cache(maxsize=1)
def process_ranks() -> Ranks:
    for rank, world, local in LAUNCHER_VARS:
        if int(os.environ.get(world, "1")) > 1:
            return Ranks(
                rank=int(os.environ.get(rank, "0")),
                world=int(os.environ[world]),
                local_rank=int(os.environ.get(local, os.environ.get(rank, "0"))),
            )
    return Ranks()


@contextlib.contextmanager
def dask_client(dc: Any, key: str) -> Iterator[Any]:
    """A client of a fresh LocalCluster (`<key>.cluster=local`) or of the scheduler at `<key>.cluster`."""
    import logging

    from distill.errors import ConfigError

    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as e:
        raise ConfigError(f"{key}.cluster={dc.cluster!r} needs Dask: pip install 'dask[distributed]'") from e
    if dc.cluster == "local":
        with (
            LocalCluster(
                n_workers=dc.workers,
                threads_per_worker=dc.threads_per_worker,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.WARNING,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
    else:
        try:
            client = Client(dc.cluster, timeout="30s")
        except OSError as e:
            raise ConfigError(
                f"{key}.cluster={dc.cluster!r}: no Dask scheduler answers there ({e}); give its address "
                f"(tcp://host:8786) or use {key}.cluster=local"
            ) from e
        with client:
            yield client


def ordered_map(
    client: Any, fn: Callable[..., Any], items: Iterable[Any], window: int, *args: Any
) -> Iterator[Any]:
    """`fn(item, *args)` for each item on the cluster, results yielded in the items' order, at most `window`
    tasks in flight (so finished results waiting their turn stay bounded)."""
    from collections import deque

    pending: deque[Any] = deque()
    for item in items:
        pending.append(client.submit(fn, item, *args, pure=False))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
