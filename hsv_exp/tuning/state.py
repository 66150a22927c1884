"""What a tuning method trains, shared by every method: LayerNorms of the window, and the
save/load of exactly the trainable parameters.

A checkpoint written by `save_trainable` holds only `requires_grad` parameters (the head, the
injected `adapter_`/`prefix_`/`lora_` modules, tuned biases or LayerNorms), so it is small and
can only be loaded into a model rebuilt the same way: same backbone, selection and method.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from hsv_exp.errors import ConfigError


def is_layer_norm(module: nn.Module) -> bool:
    # DeBERTa-v2 and others sometimes define their own LayerNorm class
    return isinstance(module, nn.LayerNorm) or type(module).__name__.lower().endswith("layernorm")


def train_window_layer_norms(model) -> None:
    """Unfreeze the LayerNorm weights and biases inside the window layers."""
    for layer in model.window_layers():
        for module in layer.modules():
            if is_layer_norm(module):
                module.requires_grad_(True)


def reference_parameter(module: nn.Module) -> torch.Tensor:
    """A parameter whose dtype and device injected modules should copy."""
    return next(module.parameters())


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies (on the CPU) of the `requires_grad` parameters, by name: what checkpoints hold."""
    return {name: parameter.detach().cpu().clone() for name, parameter in model.named_parameters() if parameter.requires_grad}


def save_trainable(model: nn.Module, path: str | os.PathLike) -> None:
    torch.save(trainable_state(model), path)


def _names(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def load_trainable(model: nn.Module, path: str | os.PathLike) -> None:
    """Copy a `save_trainable` file into the model's trainable parameters (any device).

    Raises ConfigError when the file's names or shapes differ from the model's trainable set,
    i.e. the model was not built with the same backbone, selection and tuning method.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    parameters = {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}
    missing = [name for name in parameters if name not in state]
    unexpected = [name for name in state if name not in parameters]
    if missing or unexpected:
        raise ConfigError(
            f"{path} does not match the model's trainable parameters (was it saved with another model, selection or "
            f"tuning method?): missing {_names(missing) or 'none'}; unexpected {_names(unexpected) or 'none'}"
        )
    for name, parameter in parameters.items():
        if state[name].shape != parameter.shape:
            raise ConfigError(f"{path}: {name} has shape {tuple(state[name].shape)}, the model has {tuple(parameter.shape)}")
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(state[name])
