"""Prefix tuning (Li & Liang 2021) in the window layers' self-attention.

Each window layer gets `prefix_length` learned key and value vectors per head, prepended to the
keys and values of the real tokens: every query may attend to them (the padding mask is
extended with "visible" columns), and they carry no position (zero relative-position bias).
With `prefix_hidden > 0` they are reparametrised, as in Li & Liang and He et al. 2022: an
embedding (prefix_length, d) through an MLP d -> prefix_hidden -> tanh -> 2d. The MLP here is
one per layer (the papers share one MLP across layers); it only matters while training: after
training the prefixes can be materialised, leaving 2 * prefix_length * d numbers per layer.

How the prefixes reach the attention, per architecture in transformers 5.23:
- BERT, RoBERTa, DistilBERT call `ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]`.
  A window layer's self-attention gets its own copy of the config naming `hsv_prefix`, an
  attention function registered here that prepends the prefixes, extends the mask and calls
  the model's own eager or sdpa function. Layers outside the window run unchanged code.
- MPNet computes attention inline; its window self-attention modules switch class to a
  subclass whose forward is MPNet's own with prefixes prepended.
- DeBERTa-v2 (disentangled attention: every key adds content-to-position terms) is refused.
"""

from __future__ import annotations

import copy
import math
import sys

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface
from transformers.models.mpnet.modeling_mpnet import MPNetSelfAttention

from hsv_exp.errors import ConfigError
from hsv_exp.tuning.state import reference_parameter, train_window_layer_norms

PARAMETER_PREFIX = "prefix_"  # the injected module is <attention>.prefix_encoder
PREFIX_ATTENTION = "hsv_prefix"
# model_type -> path of the self-attention module inside one layer
INTERFACE_SITES = {"bert": "attention.self", "roberta": "attention.self", "distilbert": "attention"}
MPNET_SITE = "attention.attn"
SUPPORTED = sorted([*INTERFACE_SITES, "mpnet"])


class PrefixEncoder(nn.Module):
    """The key/value prefixes of one layer: forward(batch) -> two (batch, heads, prefix_length, head_dim)."""

    def __init__(self, prefix_length: int, hidden_size: int, num_heads: int, prefix_hidden: int, like: torch.Tensor):
        super().__init__()
        self.prefix_length = prefix_length
        self.num_heads = num_heads
        factory = {"dtype": like.dtype, "device": like.device}
        if prefix_hidden > 0:
            # nn.Embedding's N(0, 1) init, as in Li & Liang's code
            self.embedding = nn.Parameter(torch.randn(prefix_length, hidden_size, **factory))
            self.mlp = nn.Sequential(nn.Linear(hidden_size, prefix_hidden, **factory), nn.Tanh(),
                                     nn.Linear(prefix_hidden, 2 * hidden_size, **factory))
        else:
            # BERT's init range; direct prefixes are optimised as they are
            self.key_value = nn.Parameter(0.02 * torch.randn(prefix_length, 2 * hidden_size, **factory))

    def forward(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        key_value = self.mlp(self.embedding) if hasattr(self, "mlp") else self.key_value
        # (p, 2d) -> (2, heads, p, head_dim)
        key_value = key_value.view(self.prefix_length, 2, self.num_heads, -1).permute(1, 2, 0, 3)
        key, value = (part.unsqueeze(0).expand(batch_size, -1, -1, -1) for part in key_value)
        return key, value


def extend_mask(mask: torch.Tensor | None, prefix_length: int) -> torch.Tensor | None:
    """(batch, 1, q, k) bool (True = attend) or additive float (0 = attend) mask -> (batch, 1, q, p + k)."""
    if mask is None:
        return None
    visible = mask.new_full((*mask.shape[:-1], prefix_length), True if mask.dtype == torch.bool else 0)
    return torch.cat([visible, mask], dim=-1)


def prefix_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, **kwargs):
    """A transformers attention function: q, k, v (batch, heads, seq, head_dim)."""
    prefix_key, prefix_value = module.prefix_encoder(query.shape[0])
    key = torch.cat([prefix_key.to(key.dtype), key], dim=2)
    value = torch.cat([prefix_value.to(value.dtype), value], dim=2)
    attention_mask = extend_mask(attention_mask, prefix_key.shape[2])
    eager = sys.modules[type(module).__module__].eager_attention_forward
    base = ALL_ATTENTION_FUNCTIONS.get_interface(module.prefix_base_attention, eager)
    return base(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(PREFIX_ATTENTION, prefix_attention)


class MPNetPrefixSelfAttention(MPNetSelfAttention):
    """MPNetSelfAttention.forward (transformers 5.23) with `prefix_encoder`'s keys and values prepended."""

    def forward(self, hidden_states, attention_mask=None, position_bias=None, output_attentions=False, **kwargs):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.attention_head_size)
        q = self.q(hidden_states).view(hidden_shape).transpose(1, 2)
        k = self.k(hidden_states).view(hidden_shape).transpose(1, 2)
        v = self.v(hidden_states).view(hidden_shape).transpose(1, 2)
        prefix_key, prefix_value = self.prefix_encoder(q.shape[0])
        prefix_length = prefix_key.shape[2]
        k = torch.cat([prefix_key.to(k.dtype), k], dim=2)
        v = torch.cat([prefix_value.to(v.dtype), v], dim=2)

        attention_scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
        if position_bias is not None:
            # prefixes have no position: no relative-position bias towards them
            attention_scores = attention_scores + nn.functional.pad(position_bias, (prefix_length, 0))
        attention_mask = extend_mask(attention_mask, prefix_length)
        if attention_mask is not None:
            attention_scores = attention_scores + attention_mask
        attention_probs = self.dropout(nn.functional.softmax(attention_scores, dim=-1))
        c = torch.matmul(attention_probs, v).permute(0, 2, 1, 3).contiguous()
        o = self.o(c.view(*c.size()[:-2], self.all_head_size))
        return (o, attention_probs) if output_attentions else (o,)


def check(model, cfg) -> str:
    """-> the model type, if prefix tuning supports it (the sizes are checked by the schema, TuningConfig)."""
    config = model.backbone.config
    model_type = getattr(config, "model_type", type(model.backbone).__name__)
    if model_type not in SUPPORTED:
        raise ConfigError(f"prefix tuning (tuning={cfg.name}) does not support '{model_type}' models, only {', '.join(SUPPORTED)}")
    implementation = config._attn_implementation
    if model_type in INTERFACE_SITES and implementation not in ("eager", "sdpa"):
        raise ConfigError(f"prefix tuning needs eager or sdpa attention; this '{model_type}' model uses {implementation}")
    return model_type


def add_prefixes(model, cfg) -> None:
    """Prefixes in the self-attention of every window layer (also the attention half of MAM)."""
    model_type = check(model, cfg)
    config = model.backbone.config
    site = INTERFACE_SITES.get(model_type, MPNET_SITE)
    for layer in model.window_layers():
        attention = layer.get_submodule(site)
        num_heads = config.hidden_size // attention.attention_head_size
        attention.prefix_encoder = PrefixEncoder(cfg.prefix_length, config.hidden_size, num_heads, cfg.prefix_hidden,
                                                 reference_parameter(attention))
        if model_type == "mpnet":
            attention.__class__ = MPNetPrefixSelfAttention
        else:
            attention.prefix_base_attention = config._attn_implementation
            attention.config = copy.copy(attention.config)  # only this module's attention function changes
            attention.config._attn_implementation = PREFIX_ATTENTION


def apply(model, cfg) -> None:
    add_prefixes(model, cfg)
    if cfg.train_layer_norm:
        train_window_layer_norms(model)
