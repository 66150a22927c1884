"""Bottleneck adapters in the window layers, in He et al. 2022's unified view.

- `adapter` (Houlsby et al. 2019): sequential, after the attention and after the FFN sublayer.
- `pfeiffer` (Pfeiffer et al. 2021): sequential, after the FFN only.
- `parallel_adapter` / `scaled_pa` (He et al.): parallel to the FFN, output scaled by
  `tuning.scale` (scaled_pa: s = 4, set in conf/tuning/scaled_pa.yaml).

Adapter(x) = up(relu(down(x))), with `up` zero-initialised so the tuned model starts as the
pretrained one. A sequential adapter maps a sublayer output h to h + Adapter(h); a parallel one
adds s * Adapter(x) to the FFN output, x being the FFN input. Both act before the sublayer's
residual add and LayerNorm, after its output dropout, as in He et al.'s code.

Adapters are registered on the window layer (`<layer>.adapter_attention`, `<layer>.adapter_ffn`)
and called from forward hooks on the layer's own modules, so no pretrained parameter is renamed.
The hooks are bound methods of the adapters, so deep copies of the model stay wired correctly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from hsv_exp.errors import ConfigError
from hsv_exp.tuning.state import reference_parameter, train_window_layer_norms

PARAMETER_PREFIX = "adapter_"  # every module this file injects is named adapter_<site>


@dataclass(frozen=True)
class Layout:
    """Dotted paths inside one transformer layer."""

    attention_output: str  # its output is the attention sublayer's output, before residual + LayerNorm
    ffn_output: str  # the same for the FFN sublayer
    # `residual`: this module is called as (ffn_hidden, ffn_input) and adds ffn_input back itself
    # (BertOutput and its copies); `module`: this module maps ffn_input -> ffn output (DistilBERT's FFN).
    ffn_input_site: str
    ffn_input_kind: str


LAYOUTS = (
    # BERT, RoBERTa, DeBERTa-v2 (and their copies: ELECTRA, XLM-R, ...)
    Layout("attention.output.dropout", "output.dropout", "output", "residual"),
    # MPNet: the attention output projection sits inside attention.attn, its dropout in attention
    Layout("attention.dropout", "output.dropout", "output", "residual"),
    # DistilBERT: no dropout after out_lin; the FFN is one module ending in its dropout
    Layout("attention.out_lin", "ffn", "ffn", "module"),
)


def _has(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


def layout_of(model) -> Layout:
    layer = model.window_layers()[0]
    for layout in LAYOUTS:
        if all(_has(layer, path) for path in (layout.attention_output, layout.ffn_output, layout.ffn_input_site)):
            return layout
    model_type = getattr(model.backbone.config, "model_type", type(model.backbone).__name__)
    raise ConfigError(f"adapters do not know where the sublayers of a '{model_type}' layer ({type(layer).__name__}) end; "
                      f"supported: BERT-, MPNet- and DistilBERT-style layers")


class Adapter(nn.Module):
    """(..., dim) -> (..., dim): up(relu(down(x))), exactly zero at init."""

    def __init__(self, dim: int, bottleneck: int, like: torch.Tensor):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck, dtype=like.dtype, device=like.device)
        self.up = nn.Linear(bottleneck, dim, dtype=like.dtype, device=like.device)
        # He et al.'s ("lora") init: the usual init below, zeros above, so training starts from identity
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.down(hidden)))


class SequentialAdapter(Adapter):
    def after(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """Forward hook on a sublayer's last module: h -> h + Adapter(h)."""
        return output + self(output)


class ParallelAdapter(Adapter):
    def __init__(self, dim: int, bottleneck: int, like: torch.Tensor, scale: float):
        super().__init__(dim, bottleneck, like)
        self.scale = scale

    def into_residual(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Pre-hook on a module called as (ffn_hidden, ffn_input) that computes
        LayerNorm(dropout(dense(ffn_hidden)) + ffn_input): adds s * Adapter(ffn_input) to the sum."""
        if len(args) >= 2:
            ffn_input = args[1]
            return (args[0], ffn_input + self.scale * self(ffn_input), *args[2:]), kwargs
        ffn_input = kwargs["input_tensor"]
        return args, {**kwargs, "input_tensor": ffn_input + self.scale * self(ffn_input)}

    def beside(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """Forward hook on the FFN module itself: FFN(x) -> FFN(x) + s * Adapter(x)."""
        return output + self.scale * self(args[0])

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def _sequential(model, cfg, sites: tuple[str, ...]) -> None:
    layout = layout_of(model)
    dim = model.backbone.config.hidden_size
    for layer in model.window_layers():
        like = reference_parameter(layer)
        for site in sites:
            adapter = SequentialAdapter(dim, cfg.bottleneck, like)
            layer.add_module(f"{PARAMETER_PREFIX}{site}", adapter)
            layer.get_submodule(getattr(layout, f"{site}_output")).register_forward_hook(adapter.after)
    if cfg.train_layer_norm:
        train_window_layer_norms(model)


def add_parallel_ffn_adapters(model, cfg) -> None:
    """Parallel adapters at the FFN of every window layer (also the FFN half of MAM)."""
    layout = layout_of(model)
    dim = model.backbone.config.hidden_size
    for layer in model.window_layers():
        adapter = ParallelAdapter(dim, cfg.bottleneck, reference_parameter(layer), cfg.scale)
        layer.add_module(f"{PARAMETER_PREFIX}ffn", adapter)
        site = layer.get_submodule(layout.ffn_input_site)
        if layout.ffn_input_kind == "residual":
            site.register_forward_pre_hook(adapter.into_residual, with_kwargs=True)
        else:
            site.register_forward_hook(adapter.beside)


def houlsby(model, cfg) -> None:
    _sequential(model, cfg, ("attention", "ffn"))


def pfeiffer(model, cfg) -> None:
    _sequential(model, cfg, ("ffn",))


def parallel(model, cfg) -> None:
    add_parallel_ffn_adapters(model, cfg)
    if cfg.train_layer_norm:
        train_window_layer_norms(model)
