"""MAM adapter (He et al. 2022, "mix-and-match"): prefix tuning at the attention plus a
(scaled) parallel adapter at the FFN, in every window layer. Sizes come from conf/tuning/mam.yaml."""

from __future__ import annotations

from hsv_exp.tuning import adapter, prefix
from hsv_exp.tuning.state import train_window_layer_norms


def apply(model, cfg) -> None:
    prefix.check(model, cfg)  # fail before any module is injected
    prefix.add_prefixes(model, cfg)
    adapter.add_parallel_ffn_adapters(model, cfg)
    if cfg.train_layer_norm:
        train_window_layer_norms(model)
