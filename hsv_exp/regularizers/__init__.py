"""Training-time regularizers that leave the trained model unchanged in shape: a plain registry.

A regularizer is `attach(model: LayerClassifier, cfg: RegularizerConfig, lr: float) -> handle`
(`none`: no handle). The handle's training interface is MVCR's (`mvcr.py`): `backward(loss)`,
`step(task_lr)`, `state_dict()`/`load_state_dict()`, `remove()`.
"""

from hsv_exp.regularizers import mvcr
from hsv_exp.strategy_config import RegularizerConfig

REGULARIZERS = {"none": None, "mvcr": mvcr.attach}


def attach(model, cfg: RegularizerConfig, lr: float):
    """The regularizer's handle on `model`, or None for `none`."""
    build = REGULARIZERS[cfg.name]
    return None if build is None else build(model, cfg, lr)


__all__ = ["REGULARIZERS", "RegularizerConfig", "attach"]
