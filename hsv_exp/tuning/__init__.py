"""Tuning methods: one module each, a plain registry.

A method is `apply(model: LayerClassifier, cfg: TuningConfig) -> None`. It is called on a model
whose backbone is fully frozen and whose head trains; it makes trainable (or injects, with a
name prefix of its own) exactly the parameters it tunes inside `model.window_layers()`.
"""

from hsv_exp.tuning import full

METHODS = {
    "full": full.apply,
}
