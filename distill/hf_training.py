"""Helpers shared by the Hugging Face trainers (teacher and students): their arguments and a time limit."""

from __future__ import annotations

import logging
import time
from typing import Any

from distill.tracking import trainer_logging

log = logging.getLogger(__name__)


def training_args(
    cls: Any,
    cfg: Any,
    run: str,
    *,
    epochs: float,
    batch_size: int,
    lr: float,
    warmup_ratio: float,
    seed: int,
    workspace: Any,
) -> Any:
    """The trainers' arguments (`cls`: CrossEncoder- or SentenceTransformerTrainingArguments): linear schedule with
    warm-up, seeded data order, no checkpoints, tracking per `logger`; output under `<workspace>/runs/<run>`.

    Launched as several processes (accelerate launch / torchrun) the trainer runs DDP: NCCL on GPUs, gloo on a
    machine without one (`use_cpu`, or transformers would not set up the CPU process group)."""
    import os

    import torch

    # the trainers' TensorBoard callback reads its folder from the environment when the trainer is built
    report_to, tb_dir = trainer_logging(cfg, run)
    if tb_dir:
        os.environ["TENSORBOARD_LOGGING_DIR"] = tb_dir
    else:
        os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
    return cls(
        use_cpu=not torch.cuda.is_available(),
        output_dir=str(workspace.runs(run)),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        warmup_steps=warmup_ratio,
        lr_scheduler_type="linear",
        seed=seed,
        data_seed=seed,
        save_strategy="no",
        logging_steps=20,
        report_to=report_to,
        disable_tqdm=True,
        run_name=f"{cfg.data.name}-{run}",
        dataloader_num_workers=0,
        # The ranking losses call the model several times per step (query/document columns, list members):
        # DDP then needs a static graph rather than the search for unused parameters.
        ddp_find_unused_parameters=False,
        ddp_static_graph=True,
    )


def _any_rank(flag: bool, device: Any) -> bool:
    """True when `flag` holds on any process (DDP ranks must stop at the same step or they deadlock)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def time_limit_callback(seconds: float | None, key: str) -> Any:
    """A transformers callback that stops training once `seconds` have passed since training began (on any rank,
    so that all ranks of a distributed run stop together). A guard, not a schedule: the model a config decides is
    set by its steps or epochs, and after training its `schedule()` says whether the guard cut that schedule
    short: the facts for the run's record (steps planned, `cut_by`) and a note for its closing line."""
    from transformers import TrainerCallback

    class TimeLimit(TrainerCallback):
        start = 0.0
        planned = 0
        cut_at: int | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()
            self.planned = int(state.max_steps)

        def on_step_end(self, args, state, control, **kwargs):
            if seconds is not None and _any_rank(time.perf_counter() - self.start > seconds, args.device):
                if state.global_step < state.max_steps:
                    log.warning(
                        "%s=%s reached at step %d of %d: stopping; this model depends on the machine's speed "
                        "(raise %s or set it to null to train the whole schedule)",
                        key, seconds, state.global_step, state.max_steps, key,
                    )  # fmt: skip
                    self.cut_at = int(state.global_step)
                control.should_training_stop = True
            return control

        def schedule(self) -> tuple[dict[str, Any], str]:
            cut = self.cut_at is not None
            note = f" (cut short by {key} at step {self.cut_at} of {self.planned})" if cut else ""
            return {"planned_steps": self.planned, "cut_by": key if cut else None}, note

    return TimeLimit()
