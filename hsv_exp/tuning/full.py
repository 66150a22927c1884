"""Full fine-tuning of the window layers (and, for select=all, the embeddings)."""

from __future__ import annotations

from hsv_exp.backbone import embeddings_of


def apply(model, cfg) -> None:
    for layer in model.window_layers():
        layer.requires_grad_(True)
    if model.selection.tune_embeddings:
        embeddings_of(model.backbone).requires_grad_(True)
