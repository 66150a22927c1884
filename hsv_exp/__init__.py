"""hsv_exp: hidden-state variability guided layer selection for transfer learning.

The Python API (hsv_exp/api.py) is imported on first use, so `import hsv_exp` stays light:
    hsv_exp.layer_variability, hsv_exp.select_layers, hsv_exp.prepare
"""

API = ("layer_variability", "select_layers", "prepare")
__all__ = list(API)


def __getattr__(name: str):
    """PEP 562: the API functions import torch, transformers and PEFT only when first asked for."""
    if name in API:
        from hsv_exp import api

        return getattr(api, name)
    raise AttributeError(f"module 'hsv_exp' has no attribute {name!r}")
