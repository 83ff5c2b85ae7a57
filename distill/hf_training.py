"""Helpers shared by the Hugging Face trainers (teacher and bi-encoder): tracking target and a time limit."""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)


def report_to(cfg: Any) -> str:
    """The trainer's `report_to`: wandb unless tracking is off (`logger=none` or `logger.mode=disabled`)."""
    return "wandb" if cfg.logger.backend == "wandb" and cfg.logger.mode != "disabled" else "none"


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
    warm-up, seeded data order, no checkpoints, tracking per `logger`; output under `<workspace>/runs/<run>`."""
    return cls(
        output_dir=str(workspace.root / "runs" / run),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        warmup_steps=warmup_ratio,
        lr_scheduler_type="linear",
        seed=seed,
        data_seed=seed,
        save_strategy="no",
        logging_steps=20,
        report_to=report_to(cfg),
        disable_tqdm=True,
        run_name=f"{cfg.data.name}-{run}",
        dataloader_num_workers=0,
    )


def time_limit_callback(seconds: float | None, key: str) -> Any:
    """A transformers callback that stops training once `seconds` have passed since training began."""
    from transformers import TrainerCallback

    class TimeLimit(TrainerCallback):
        start = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if seconds is not None and time.perf_counter() - self.start > seconds:
                log.warning("%s=%s reached at step %d: stopping", key, seconds, state.global_step)
                control.should_training_stop = True
            return control

    return TimeLimit()
