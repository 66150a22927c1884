"""Schemas of the training strategies, part of the config schema (hsv_exp/config.py imports them):
how the head is initialised before fine-tuning (`head_init=`, hsv_exp/head_init.py) and the
regularizer attached while training (`regularizer=`, hsv_exp/regularizers/). Plain dataclasses: no
torch import, so composing a config stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hsv_exp.errors import ConfigError

NAMES = ("random", "lpft", "ehft")
PET_METHODS = ("bitfit", "lora", "prefix")
PET_LAYERS = ("window", "kept")
# The authors' stage-1 learning rates (scripts/finetune.sh:117-128): "2step+head" and their PET methods.
STAGE1_LR = {"lpft": 1e-3, "bitfit": 5e-4, "lora": 5e-4, "prefix": 5e-3}


@dataclass
class HeadInitConfig:
    """`head_init=` (conf/head_init/{random,lpft,ehft}.yaml)."""

    name: str = "random"  # random (nothing happens) | lpft (head-only stage 1) | ehft (head + PET stage 1)
    method: str = "bitfit"  # ehft: the PET method of stage 1, bitfit | lora | prefix
    epochs: Optional[int] = None  # stage-1 epochs; None = round(fraction * train.epochs), at least 1
    fraction: float = 0.1  # share of train.epochs stage 1 takes when epochs is None (the authors' tenth)
    lr: Optional[float] = None  # stage-1 lr; None = the authors' for the method (STAGE1_LR)
    pet_layers: str = "window"  # ehft: window (over the frozen cache) | kept (every kept layer)

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise ConfigError(f"head_init.name must be random|lpft|ehft, got {self.name}")
        if self.method not in PET_METHODS:
            raise ConfigError(f"head_init.method must be bitfit|lora|prefix, got {self.method}")
        if self.pet_layers not in PET_LAYERS:
            raise ConfigError(f"head_init.pet_layers must be window|kept, got {self.pet_layers}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"head_init.epochs must be >= 1 (or null for a fraction of train.epochs), got {self.epochs}")
        if not 0 < self.fraction < 1:
            raise ConfigError(f"head_init.fraction must be in (0, 1), got {self.fraction}")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"head_init.lr must be > 0, got {self.lr}")

    @property
    def enabled(self) -> bool:
        return self.name != "random"

    @property
    def stage1_lr(self) -> float:
        return self.lr or STAGE1_LR["lpft" if self.name == "lpft" else self.method]


def stage_epochs(cfg: HeadInitConfig, total_epochs: int) -> tuple[int, int]:
    """(stage-1 epochs, stage-2 epochs) out of train.epochs; ConfigError if stage 2 would get none.

    The lead calls this at compose time too (Config.__post_init__), so a bad budget fails early."""
    if not cfg.enabled:
        return 0, total_epochs
    first = cfg.epochs if cfg.epochs is not None else max(1, round(cfg.fraction * total_epochs))
    if total_epochs - first < 1:
        raise ConfigError(f"head_init={cfg.name} takes {first} of train.epochs={total_epochs} epochs for stage 1, "
                          f"leaving none for fine-tuning: raise train.epochs or lower head_init.epochs")
    return first, total_epochs - first


@dataclass
class RegularizerConfig:
    name: str = "none"  # none | mvcr
    # hsv_exp layer numbers (0 = embeddings) whose output is perturbed; empty: the authors' 7, 9, 12 of 12 mapped
    layers: list[int] = field(default_factory=list)
    dims: list[int] = field(default_factory=lambda: [128, 256, 512])  # one HAE per width at each point
    warmup_epochs: Optional[int] = None  # AE-only epochs (inside train.epochs); None = round(warmup_fraction x epochs)
    warmup_fraction: float = 0.04  # the authors: epochs 1-4 of 100 AE-only (run_ae.py num_pre_training_epoch = 5)
    lr_multiplier: float = 50.0  # AE reconstruction lr = this x the task lr (run_ae.py: args.learning_rate * 50)
    noise_std: float = 0.002  # Gaussian noise added before the path choice (AE2TK)
    dropout: float = 0.2  # inside the HAEs (InfoBottle2, InfoBottleSub)
    ae_task_gradient: bool = True  # AEs also step on the task gradient at the task lr, as in the authors' optimizer
    max_grad_norm: float = 1.0  # clipping of each AE step (run_ae.py clips at args.max_grad_norm = 1)

    def __post_init__(self) -> None:
        if self.name not in ("none", "mvcr"):
            raise ConfigError(f"regularizer.name must be none or mvcr, got {self.name!r}")
        if not self.dims or any(dim < 2 or dim % 2 for dim in self.dims):
            raise ConfigError(f"regularizer.dims must be even widths >= 2 (a sub-AE halves them), got {list(self.dims)}")
        if any(layer < 0 for layer in self.layers) or len(set(self.layers)) != len(self.layers):
            raise ConfigError(f"regularizer.layers must be distinct layer numbers >= 0, got {list(self.layers)}")
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise ConfigError(f"regularizer.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"regularizer.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.lr_multiplier <= 0 or self.max_grad_norm <= 0:
            raise ConfigError("regularizer.lr_multiplier and regularizer.max_grad_norm must be > 0")
        if self.noise_std < 0 or not 0 <= self.dropout < 1:
            raise ConfigError(f"regularizer.noise_std must be >= 0 and regularizer.dropout in [0, 1), got "
                              f"{self.noise_std}, {self.dropout}")


def ae_only_epochs(cfg: RegularizerConfig, epochs: int) -> int:
    """MVCR's AE-only warm-up epochs out of the `epochs` it trains (train.epochs, less a head_init's
    stage 1); ConfigError if none would be left for fine-tuning. 0 for regularizer=none.

    Called at compose time (Config.__post_init__) and by hsv_exp.train."""
    if cfg.name == "none":
        return 0
    first = cfg.warmup_epochs if cfg.warmup_epochs is not None else round(cfg.warmup_fraction * epochs)
    if first >= epochs:
        raise ConfigError(f"regularizer=mvcr takes {first} AE-only epochs of the {epochs} it trains (train.epochs, less "
                          f"head_init's), leaving none for fine-tuning: raise train.epochs or lower regularizer.warmup_epochs")
    return first
