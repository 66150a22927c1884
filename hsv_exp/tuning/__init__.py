"""Tuning methods: one module each, a plain registry.

A method is `apply(model: LayerClassifier, cfg: TuningConfig) -> None`. It is called on a model
whose backbone is fully frozen and whose head trains; it makes trainable (or injects, with the
name prefix its module declares as `PARAMETER_PREFIX`: `adapter_`, `prefix_`, `lora_`) exactly the
parameters it tunes inside `model.window_layers()`, plus the window's LayerNorms when
`cfg.train_layer_norm` (PET methods). Method sizes (bottleneck, scale, ...) come from
conf/tuning/<name>.yaml. `state.save_trainable` and `state.load_trainable` save and restore what a
method trains, for every method.

The schema knows the method names without importing this package (config.TUNING_METHODS, so
building a config does not import torch); the registry asserts at import that the two agree.
"""

from __future__ import annotations

from hsv_exp.config import TUNING_METHODS
from hsv_exp.tuning import adapter, bitfit, full, linear_probe, lora, mam, prefix, probe

METHODS = {
    "full": full.apply,
    "adapter": adapter.houlsby,
    "pfeiffer": adapter.pfeiffer,
    "parallel_adapter": adapter.parallel,
    "scaled_pa": adapter.parallel,  # s = 4 from conf/tuning/scaled_pa.yaml
    "mam": mam.apply,
    "prefix": prefix.apply,
    "lora": lora.apply,
    "bitfit": bitfit.apply,
    "probe": probe.apply,  # the head alone (select.k=0), by SGD through the frozen cache
    "linear_probe": linear_probe.apply,  # the head alone, fitted in closed form (TRAINERS below)
}
assert tuple(METHODS) == TUNING_METHODS, f"config.TUNING_METHODS {TUNING_METHODS} != the registry's {tuple(METHODS)}"

# Name prefixes of the injected parameters that run once per token (adapters, LoRA), which the
# compute accounting counts (hsv_exp.compute.injected_params). Prefix tuning's `prefix_`
# parameters (the reparametrisation MLP) run once per step: they are counted as keys instead.
PER_TOKEN_PREFIXES = {
    "adapter": (adapter.PARAMETER_PREFIX,),
    "pfeiffer": (adapter.PARAMETER_PREFIX,),
    "parallel_adapter": (adapter.PARAMETER_PREFIX,),
    "scaled_pa": (adapter.PARAMETER_PREFIX,),
    "mam": (adapter.PARAMETER_PREFIX,),
    "lora": (lora.PARAMETER_PREFIX,),
}
# Methods that replace the SGD loop (hsv_exp.train.train) by their own fit, with its signature.
TRAINERS = {"linear_probe": linear_probe.fit}
# Methods that prepend tuning.prefix_length keys and values to each window layer's attention.
PREFIX_KEY_METHODS = ("prefix", "mam")


def apply_method(model, cfg) -> None:
    """Make `model` train what tuning method `cfg.name` trains (see the module docstring)."""
    METHODS[cfg.name](model, cfg)
