"""Model surgery: remove the layers above the head layer, freeze what does not train.

Removal is real: the dropped layers leave the ModuleList (and memory), and the model config's
layer count is updated, so inference runs only layers 1..head.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from hsv_exp.backbone import embeddings_of, find_layers
from hsv_exp.errors import ConfigError


@dataclass(frozen=True)
class Truncated:
    """The pipeline's truncation step: the encoder cut to layers 1..head_layer, and the size of the
    whole model it was cut from (the compute accounting's reference)."""

    encoder: nn.Module
    full_params: int  # parameters of the untruncated model
    full_layers: int  # its layer count L


def truncate_model(backbone: nn.Module, head_layer: int) -> Truncated:
    """Count the whole model, then remove its layers above `head_layer` (in place: the dropped
    layers leave memory)."""
    full_params = sum(parameter.numel() for parameter in backbone.parameters())
    full_layers = len(find_layers(backbone)[2])
    return Truncated(truncate(backbone, head_layer), full_params, full_layers)


def truncate(backbone: nn.Module, head_layer: int) -> nn.Module:
    """Keep layers 1..head_layer (in place); returns the backbone."""
    parent, attr, layers = find_layers(backbone)
    if not 1 <= head_layer <= len(layers):
        raise ConfigError(f"head layer {head_layer} is outside 1..{len(layers)}")
    setattr(parent, attr, nn.ModuleList(list(layers)[:head_layer]))
    backbone.config.num_hidden_layers = head_layer
    return backbone


def freeze_all(module: nn.Module) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(False)


def frozen_modules(backbone: nn.Module, tuned_layers: tuple[int, ...], tune_embeddings: bool) -> list[nn.Module]:
    """Modules that do not train: they run in eval mode (no dropout). Those below the window give
    fixed outputs (the frozen prefix); kept layers above it (select.last_tuned_layer) run after the
    window and pass its gradient down. An empty window (head-only methods) freezes every kept layer."""
    layers = find_layers(backbone)[2]
    frozen = [layers[index - 1] for index in range(1, len(layers) + 1) if index not in tuned_layers]
    if not tune_embeddings:
        frozen.insert(0, embeddings_of(backbone))
    return frozen
