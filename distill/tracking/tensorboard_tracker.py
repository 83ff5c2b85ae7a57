"""TensorBoard: event files under `<workspace>/tensorboard/<stage>/<run>/` (no account, no server to log);
`make dashboard` serves them. The trainers' loss curves land in the same run folder; the run's parameters and final
metrics go to the HPARAMS tab, where a sweep's runs sit side by side (table, parallel coordinates)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.tracking import Run, Tracker, run_name, sweep_id, sweep_overrides


class TensorBoardRun(Run):
    def __init__(self, folder: Path, params: dict[str, Any], config: str = ""):
        from torch.utils.tensorboard import SummaryWriter

        self.folder = folder
        self.writer = SummaryWriter(log_dir=str(folder))
        if config:  # the TEXT tab: the run's resolved config
            self.writer.add_text("config", "```\n" + config + "\n```")
        self.params = params
        self.final: dict[str, float] = {}
        self.artifacts: list[str] = []

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(k, v, global_step=step)
                self.final[k] = float(v)  # the last value of each metric goes to the HPARAMS row

    def summary(self, metrics: dict[str, Any]) -> None:
        self.log(metrics)

    def artifact(self, path: Path, type: str, name: str | None = None) -> None:
        self.artifacts.append(f"{type}: {path}")

    def close(self) -> None:
        if self.artifacts:
            self.writer.add_text("artifacts", "\n\n".join(self.artifacts))
        if self.final:  # one HPARAMS row per run: what was set against what came out
            self.writer.add_hparams(self.params, self.final, run_name=".")
        self.writer.close()


class TensorBoardTracker(Tracker):
    report_to = "tensorboard"

    def __init__(self, dir: str = "tensorboard"):
        self.dir = Path(dir)

    def open(self, cfg: Any, stage: str) -> Run:
        params: dict[str, Any] = {"stage": stage, "data": str(cfg.data.name)}
        params |= {k: _scalar(v) for k, v in sweep_overrides().items()}
        if (sweep := sweep_id()) is not None:
            params["sweep"] = sweep
        from omegaconf import OmegaConf

        config = OmegaConf.to_yaml(cfg, resolve=True) if OmegaConf.is_config(cfg) else ""
        return TensorBoardRun(self.dir / stage / run_name(cfg, stage), params, config)

    def trainer_logging_dir(self, cfg: Any, run: str) -> str | None:
        return str(self.dir / "trainer" / run_name(cfg, run))


def _scalar(v: Any) -> Any:
    """A value TensorBoard's HPARAMS accepts (numbers stay numbers, anything else becomes text)."""
    try:
        return float(v) if not isinstance(v, bool) else v
    except (TypeError, ValueError):
        return str(v)
