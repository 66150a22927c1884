"""BitFit (Ben Zaken et al. 2022): only the bias terms of the window layers train.

LayerNorm biases are bias terms and train; LayerNorm gains train only with tuning.train_layer_norm.
"""

from __future__ import annotations

from hsv_exp.tuning.state import train_window_layer_norms


def apply(model, cfg) -> None:
    for layer in model.window_layers():
        for name, parameter in layer.named_parameters():
            if name == "bias" or name.endswith(".bias"):
                parameter.requires_grad_(True)
    if cfg.train_layer_norm:
        train_window_layer_norms(model)
