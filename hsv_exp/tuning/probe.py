"""The head alone, trained by SGD (tuning=probe): nothing in the encoder trains or is injected.

The window is empty (select.k=0, checked at compose time), so the whole kept encoder is the frozen
prefix: with train.cache_frozen its output at the head layer is computed once and every epoch runs
only the pooling and the head (hsv_exp.frozen_cache). The closed-form variant is linear_probe.py.
"""

from __future__ import annotations

PARAMETER_PREFIX = None  # nothing is injected


def apply(model, cfg) -> None:
    """The classifier's head already trains and its encoder is frozen: nothing to add."""
    if model.selection.tuned_layers:
        raise ValueError(f"tuning={cfg.name} trains only the head, but the window is {list(model.selection.tuned_layers)}")
