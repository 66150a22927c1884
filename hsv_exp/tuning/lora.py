"""LoRA (Hu et al. 2022) on the window layers' attention query/value projections, through PEFT.

`peft.inject_adapter_in_model` replaces the target Linear layers of `model.backbone` in place
(no PeftModel wrapper), so LayerClassifier keeps its `backbone.*` / `head.*` names: a target
`...attention.self.query` becomes `...query.base_layer` (frozen) plus `...query.lora_A.default`
and `...query.lora_B.default` (trained; B starts at zero, so the tuned model starts as the
pretrained one). PEFT finds the layer index as the number after the layer list's attribute
(`encoder.layer.<i>.`), 0-based in the truncated ModuleList: window layer l is index l - 1.
"""

from __future__ import annotations

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer

from hsv_exp.backbone import find_layers
from hsv_exp.errors import ConfigError
from hsv_exp.tuning.state import train_window_layer_norms

PARAMETER_PREFIX = "lora_"  # PEFT names its LoRA parameters lora_A / lora_B

# model_type -> the attention projections Hu et al. adapt (W_q and W_v)
DEFAULT_TARGETS = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "mpnet": ["q", "v"],
    "distilbert": ["q_lin", "v_lin"],
    "deberta-v2": ["query_proj", "value_proj"],
}


def target_modules(model, cfg) -> list[str]:
    if cfg.lora_target_modules:
        return list(cfg.lora_target_modules)
    model_type = getattr(model.backbone.config, "model_type", type(model.backbone).__name__)
    if model_type not in DEFAULT_TARGETS:
        raise ConfigError(f"no default LoRA targets for '{model_type}' models; set tuning.lora_target_modules=[...] "
                          f"(names of Linear layers inside a transformer layer)")
    return DEFAULT_TARGETS[model_type]


def apply(model, cfg) -> None:
    targets = target_modules(model, cfg)
    window = [layer - 1 for layer in model.selection.tuned_layers]
    layers_attr = find_layers(model.backbone)[1]
    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets,
                        layers_to_transform=window, layers_pattern=layers_attr, bias="none")
    try:
        inject_adapter_in_model(config, model.backbone)
    except ValueError as exc:  # PEFT: "Target modules {...} not found in the base model"
        raise ConfigError(f"tuning.lora_target_modules={targets}: {str(exc).splitlines()[0]}") from exc
    injected = [name for name, module in model.backbone.named_modules() if isinstance(module, LoraLayer)]
    if len(injected) != len(window) * len(targets):
        raise ConfigError(f"tuning.lora_target_modules={targets} matched {len(injected)} modules in the "
                          f"{len(window)} window layers, expected one per target per layer: {injected}")
    if cfg.train_layer_norm:
        train_window_layer_norms(model)
