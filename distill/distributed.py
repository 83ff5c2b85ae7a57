"""Which process am I? One view of the launch, whether plain `python`, `accelerate launch` or `torchrun`.

    ranks = process_ranks()
    if ranks.world > 1: ...   # launched with e.g. `accelerate launch --num_processes 8 scripts/teacher_score.py`
    ranks.barrier()

Launchers set WORLD_SIZE (torchrun, `accelerate launch --multi_gpu`) or PMI_SIZE / OMPI_COMM_WORLD_SIZE (mpirun,
which is what `accelerate launch --cpu --num_processes N` uses); a plain run is rank 0 of 1 and never touches
torch.distributed. With several processes the process group comes from accelerate's `PartialState`: NCCL on
GPUs, gloo on a machine without one (there `accelerate launch --multi_gpu` still starts N CPU processes through
torchrun). The timeout is long: ranks that finish their share early wait at the final barrier for the slowest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from typing import Any

BARRIER_TIMEOUT = timedelta(hours=12)
WORLD_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    state: Any = field(default=None, compare=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def device(self, requested: str) -> str:
        """`auto` becomes this process's own GPU (cuda:LOCAL_RANK, wrapping round when there are more processes
        than GPUs); anything else is used as given."""
        import torch

        if requested != "auto" or self.world == 1 or not torch.cuda.is_available():
            return requested
        return f"cuda:{self.local_rank % torch.cuda.device_count()}"


@lru_cache(maxsize=1)
def process_ranks() -> Ranks:
    world = max(int(os.environ.get(k, "1")) for k in WORLD_SIZE_VARS)
    if world <= 1:
        return Ranks()
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available(), timeout=BARRIER_TIMEOUT)
    return Ranks(
        rank=state.process_index, world=state.num_processes, local_rank=state.local_process_index, state=state
    )
