"""Tuning methods: one module each, a plain registry.

A method is `apply(model: LayerClassifier, cfg: TuningConfig) -> None`. It is called on a model
whose backbone is fully frozen and whose head trains; it makes trainable (or injects, with a
name prefix of its own: `adapter_`, `prefix_`, `lora_`) exactly the parameters it tunes inside
`model.window_layers()`, plus the window's LayerNorms when `cfg.train_layer_norm` (PET methods).
Method sizes (bottleneck, scale, ...) come from conf/tuning/<name>.yaml. `state.save_trainable`
and `state.load_trainable` save and restore what a method trains, for every method.
"""

from hsv_exp.tuning import adapter, bitfit, full, lora, mam, prefix

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
}
