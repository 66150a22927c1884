"""Load a pretrained (or random-init) encoder and its tokenizer, and find its layer stack.

Works across encoder layouts: BERT/RoBERTa/MPNet/DeBERTa-v2 keep their transformer layers in
`encoder.layer`, DistilBERT in `transformer.layer`; anything else is found by looking for the
ModuleList whose length is the config's number of hidden layers.
"""

from __future__ import annotations

import importlib
import inspect
import os

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from hsv_exp import model_parts
from hsv_exp.config import ModelConfig
from hsv_exp.errors import ConfigError

KNOWN_LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")


def resolve_path(name_or_path: str) -> str:
    """`package:<module>` -> the module's `get_model_path()`; `pypi-parts:<name>` -> the model dir
    joined from its PyPI parts (hsv_exp/model_parts.py); anything else unchanged."""
    if name_or_path.startswith(model_parts.SCHEME):
        return str(model_parts.resolve(name_or_path.removeprefix(model_parts.SCHEME)))
    if name_or_path.startswith("package:"):
        module_name = name_or_path.split(":", 1)[1]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"model package '{module_name}' is not installed (pip install {module_name.replace('_', '-')})") from exc
        return module.get_model_path()
    return name_or_path


def _is_hub_name(path: str) -> bool:
    return not os.path.exists(path) and not path.startswith((".", "/", "~"))


def _load_error(path: str, exc: Exception) -> ConfigError:
    if _is_hub_name(path):
        return ConfigError(
            f"cannot load model '{path}' (not a local dir, and the Hugging Face hub is unreachable or "
            f"HF_HUB_OFFLINE=1); use model=minilm or model.name_or_path=/path/to/checkpoint"
        )
    return ConfigError(f"cannot load model from '{path}': {str(exc).splitlines()[0]}")


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    path = resolve_path(cfg.tokenizer or cfg.name_or_path)  # type: ignore[arg-type]
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # transformers raises OSError/ValueError/HF errors
        raise _load_error(path, exc) from exc


def load_backbone(cfg: ModelConfig, seed: int = 0) -> PreTrainedModel:
    """The bare encoder (no task head), in eval mode."""
    if cfg.random_init:
        try:
            config = AutoConfig.for_model(cfg.arch, **cfg.arch_kwargs)
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"model.arch='{cfg.arch}' is not a transformers model type") from exc
        torch.manual_seed(seed)
        model = AutoModel.from_config(config)
    else:
        path = resolve_path(cfg.name_or_path)  # type: ignore[arg-type]
        try:
            model = AutoModel.from_pretrained(path, dtype=getattr(torch, cfg.dtype), add_pooling_layer=False)
        except TypeError:  # models without a pooler do not take add_pooling_layer
            model = AutoModel.from_pretrained(path, dtype=getattr(torch, cfg.dtype))
        except Exception as exc:
            raise _load_error(path, exc) from exc
    return model.eval()


def find_layers(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """(parent module, attribute name, the ModuleList of transformer layers)."""
    for dotted in KNOWN_LAYER_PATHS:
        *parents, attr = dotted.split(".")
        parent = model
        for name in parents:
            parent = getattr(parent, name, None)
            if parent is None:
                break
        layers = getattr(parent, attr, None) if parent is not None else None
        if isinstance(layers, nn.ModuleList):
            return parent, attr, layers
    expected = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == expected:
            parent_name, _, attr = name.rpartition(".")
            return model.get_submodule(parent_name), attr, module
    raise ConfigError(f"cannot find the transformer layer stack of {type(model).__name__}")


def num_layers(model: nn.Module) -> int:
    return len(find_layers(model)[2])


def embeddings_name(model: nn.Module) -> str:
    for name in ("embeddings", "embed_tokens"):
        if hasattr(model, name):
            return name
    raise ConfigError(f"cannot find the embedding module of {type(model).__name__}")


def embeddings_of(model: nn.Module) -> nn.Module:
    return getattr(model, embeddings_name(model))


ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def encoder_inputs(batch: dict, accepts: set[str]) -> dict:
    """The encoder's own inputs from a batch, minus those its forward does not take."""
    return {key: batch[key] for key in ENCODER_INPUTS if batch.get(key) is not None and key in accepts}


def forward_kwargs(model: nn.Module) -> set[str]:
    """Names the encoder's forward accepts (DistilBERT/RoBERTa-style models take no token_type_ids)."""
    return set(inspect.signature(model.forward).parameters)
