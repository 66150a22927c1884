"""Per-layer scores -> which layer gets the classifier and which layers are tuned.

Layers are numbered as in the paper: 0 is the embedding output, 1..L the transformer layers.
The tuned window is the k layers ending at the head layer: head-k+1 .. head; k = 0 is the empty
window of the head-only methods (tuning=probe, linear_probe): every kept layer is a frozen prefix
and only the head trains. A head chosen by
the user (top, manual) with k > head is a config error; a head chosen by variability can land
below k, and then the window is every layer up to it (1 .. head), with a warning.
select=manual with select.last_tuned_layer (the official code's --last_finetune_layer) ends the
window below the head instead: the layers above it up to the head are kept but frozen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from hsv_exp.config import SelectConfig
from hsv_exp.errors import ConfigError

log = logging.getLogger("hsv_exp")


@dataclass(frozen=True)
class Selection:
    head_layer: int  # 1..L: the classifier reads this layer; layers above it are removed
    tuned_layers: tuple[int, ...]  # 1-based layer numbers that train
    num_layers: int  # L of the untruncated model
    tune_embeddings: bool = False  # only select=all trains the embeddings
    rule: str = ""  # how the head layer was chosen, for logs
    scores: tuple[float, ...] = field(default=(), compare=False)  # nu(0..L) when a scan ran

    @property
    def first_tuned(self) -> int:
        """The lowest tuned layer; head_layer + 1 for an empty window (the whole encoder is frozen)."""
        return min(self.tuned_layers, default=self.head_layer + 1)

    @property
    def frozen_layers(self) -> tuple[int, ...]:
        """Kept layers that do not train (below the window, and above it up to the head)."""
        return tuple(layer for layer in range(1, self.head_layer + 1) if layer not in self.tuned_layers)


def window(head_layer: int, k: int) -> tuple[int, ...]:
    if k > head_layer:
        raise ConfigError(f"select.k={k} is larger than the head layer {head_layer}: the window would reach below layer 1")
    return tuple(range(head_layer - k + 1, head_layer + 1))


def pick_head_layer(scores: list[float], rule: str, tolerance: float) -> int:
    """argmin of nu over layers 1..L, or the earliest layer within (1+tolerance) of that minimum."""
    candidates = list(range(1, len(scores)))
    best = min(candidates, key=lambda layer: scores[layer])
    if rule == "argmin":
        return best
    threshold = scores[best] * (1.0 + tolerance)
    return next(layer for layer in candidates if scores[layer] <= threshold)


def select_layers(cfg: SelectConfig, num_layers: int, scores: list[float] | None = None) -> Selection:
    if cfg.name == "all":
        return Selection(num_layers, tuple(range(1, num_layers + 1)), num_layers, tune_embeddings=True, rule="all")
    if cfg.name == "top":
        head = num_layers
        rule = "top"
    elif cfg.name == "manual":
        head = int(cfg.head_layer)  # type: ignore[arg-type]
        if not 1 <= head <= num_layers:
            raise ConfigError(f"select.head_layer={head} is outside 1..{num_layers}")
        rule = "manual"
        if cfg.last_tuned_layer is not None:
            return Selection(head, window(int(cfg.last_tuned_layer), cfg.k), num_layers, rule=f"manual, window ends at {cfg.last_tuned_layer}")
    else:
        if scores is None:
            raise ConfigError("select=variability needs a variability scan (stage=scan or stage=all)")
        if len(scores) != num_layers + 1:
            raise ConfigError(f"got {len(scores)} layer scores for a {num_layers}-layer model (expected {num_layers + 1})")
        head = pick_head_layer(scores, cfg.rule, cfg.tolerance)
        rule = f"variability/{cfg.rule}"
        if cfg.k > head:
            log.warning("variability put the head on layer %d, below select.k=%d: tuning layers 1..%d", head, cfg.k, head)
            return Selection(head, window(head, head), num_layers, rule=f"{rule}, window clipped to {head}", scores=tuple(scores))
    return Selection(head, window(head, cfg.k), num_layers, rule=rule, scores=tuple(scores or ()))
