"""Experiment tracking: Weights & Biases (online with an API key, offline otherwise) or nothing.

Metric names follow `split/name`: `train/loss`, `dev/accuracy`, `variability/layer_03`.
"""

from __future__ import annotations

import os
from pathlib import Path

from hsv_exp.config import LoggerConfig


class Tracker:
    """No-op base: `logger=none`."""

    def log(self, metrics: dict) -> None:
        pass

    def log_variability(self, scores: list[float], metric: str) -> None:
        pass

    def summary(self, values: dict) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def _wandb_mode(cfg: LoggerConfig) -> str | None:
    if os.environ.get("WANDB_MODE"):
        return None  # the environment decides (tests use WANDB_MODE=disabled)
    if cfg.mode != "auto":
        return cfg.mode
    has_key = bool(os.environ.get("WANDB_API_KEY")) or "api.wandb.ai" in _netrc_text()
    return "online" if has_key else "offline"


def _netrc_text() -> str:
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return path.read_text()
    except OSError:
        return ""


class WandbTracker(Tracker):
    def __init__(self, cfg: LoggerConfig, run_dir: Path, config: dict, name: str, group: str | None, tags: list[str], job_type: str):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            mode=_wandb_mode(cfg),
            dir=str(run_dir),
            config=config,
            name=name,
            group=group,
            tags=tags,
            job_type=job_type,
            settings=wandb.Settings(save_code=False, console="off", x_disable_stats=True),
            reinit="finish_previous",
        )

    def log(self, metrics: dict) -> None:
        self.run.log(metrics)

    def log_variability(self, scores: list[float], metric: str) -> None:
        table = self.wandb.Table(columns=["layer", metric], data=[[layer, score] for layer, score in enumerate(scores)])
        self.run.log({
            f"{metric}/table": table,
            f"{metric}/plot": self.wandb.plot.line(table, "layer", metric, title=f"{metric} per layer"),
        })
        self.run.summary.update({f"{metric}/layer_{layer:02d}": score for layer, score in enumerate(scores)})

    def summary(self, values: dict) -> None:
        self.run.summary.update(values)

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


def make_tracker(cfg: LoggerConfig, run_dir: Path, config: dict, name: str, group: str | None, tags: list[str], job_type: str) -> Tracker:
    if cfg.name == "none":
        return Tracker()
    if cfg.name == "wandb":
        return WandbTracker(cfg, run_dir, config, name, group, tags, job_type)
    raise ValueError(f"unknown logger {cfg.name}")
