"""Tuning methods over tiny random encoders: what trains, what stays fixed, where they start.

The matrix is (method x selection x architecture). Expected trainable names are written out
from the layer indices and each method's documented naming, never by calling the method again.
Methods use their real configs (conf/tuning/<method>.yaml merged into the TuningConfig schema).
"""

from __future__ import annotations

import copy
import functools
import pathlib
import re

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel

from hsv_exp.api import method_config
from hsv_exp.classifier import LayerClassifier
from hsv_exp.truncation import truncate
from hsv_exp.config import HEAD_ONLY_METHODS, SelectConfig, TuningConfig
from hsv_exp.errors import ConfigError
from hsv_exp.selection import select_layers
from hsv_exp.tuning import METHODS
from hsv_exp.tuning.prefix import PrefixEncoder
from hsv_exp.tuning.state import load_trainable, save_trainable

CONF = pathlib.Path(__file__).resolve().parents[1] / "conf" / "tuning"
NUM_LAYERS = 4
NUM_LABELS = 3
TINY = dict(hidden_size=32, num_hidden_layers=NUM_LAYERS, num_attention_heads=2, intermediate_size=37, vocab_size=100)
ARCHS = {
    "bert": TINY,
    "roberta": TINY,
    "mpnet": TINY,
    "distilbert": dict(dim=32, n_layers=NUM_LAYERS, n_heads=2, hidden_dim=37, vocab_size=100),
    "deberta-v2": TINY,
}
PREFIX_ARCHS = ("bert", "roberta", "mpnet", "distilbert")  # deberta-v2 is refused (test below)
SELECTS = {
    "top": SelectConfig(name="top", k=2),  # window 3, 4; layers 1, 2 frozen
    "manual": SelectConfig(name="manual", head_layer=3, k=2),  # window 2, 3; layer 1 frozen; layer 4 removed
    "all": SelectConfig(name="all"),  # window 1..4 and the embeddings
}

# Where each architecture keeps its self-attention, and the names LoRA targets by default.
ATTENTION = {"bert": "attention.self", "roberta": "attention.self", "mpnet": "attention.attn",
             "distilbert": "attention", "deberta-v2": "attention.self"}
LORA_TARGETS = {"bert": ("query", "value"), "roberta": ("query", "value"), "mpnet": ("q", "v"),
                "distilbert": ("q_lin", "v_lin"), "deberta-v2": ("query_proj", "value_proj")}
ADAPTER_SITES = {"adapter": ("attention", "ffn"), "pfeiffer": ("ffn",), "parallel_adapter": ("ffn",),
                 "scaled_pa": ("ffn",), "mam": ("ffn",)}
PREFIX_PARAMS = ("embedding", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias")
STARTS_PRETRAINED = ("full", "bitfit", "adapter", "pfeiffer", "parallel_adapter", "scaled_pa", "lora")
LAYER_NAME = re.compile(r"^backbone\.(?:encoder|transformer)\.layer\.(\d+)\.(.+)$")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def tuning_config(method: str, **overrides) -> TuningConfig:
    return method_config(method, **overrides)


@functools.cache
def _pretrained(arch: str):
    torch.manual_seed(0)
    return AutoModel.from_config(AutoConfig.for_model(arch, **ARCHS[arch])).eval()


def build(arch: str, select: str = "top", method: str | None = None, seed: int = 2, **overrides) -> LayerClassifier:
    """A fresh classifier on the same 'pretrained' tiny backbone; the method's own init is seeded."""
    backbone = copy.deepcopy(_pretrained(arch))
    torch.manual_seed(1)
    selection = select_layers(SELECTS[select], NUM_LAYERS)
    model = LayerClassifier(truncate(backbone, selection.head_layer), selection, NUM_LABELS)
    if method is not None:
        torch.manual_seed(seed)
        METHODS[method](model, tuning_config(method, **overrides))
    return model.eval()


def batch():
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 100, (4, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, -3:] = 0  # padding, so every attention path gets a real mask
    attention_mask[2, -1:] = 0
    labels = torch.randint(0, NUM_LABELS, (4,), generator=generator)
    return input_ids, attention_mask, labels


def logits(model: LayerClassifier) -> torch.Tensor:
    input_ids, attention_mask, _ = batch()
    with torch.no_grad():
        return model(input_ids, attention_mask)


def one_step(model: LayerClassifier) -> None:
    input_ids, attention_mask, labels = batch()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    F.cross_entropy(model(input_ids, attention_mask), labels).backward()
    optimizer.step()
    model.eval()


def trainable(model) -> set[str]:
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


def expected_trainable(model: LayerClassifier, arch: str, method: str, cfg: TuningConfig) -> set[str]:
    names = {name for name, _ in model.named_parameters()}
    window = {layer - 1 for layer in model.selection.tuned_layers}  # 0-based ModuleList indices
    root = "backbone.transformer.layer" if arch == "distilbert" else "backbone.encoder.layer"

    def in_window(pattern: str) -> set[str]:
        return {name for name in names
                if (match := LAYER_NAME.match(name)) and int(match[1]) in window and re.search(pattern, match[2])}

    expected = {"head.weight", "head.bias"}
    if method == "full":
        expected |= in_window(r"")
        if model.selection.tune_embeddings:
            expected |= {name for name in names if name.startswith("backbone.embeddings.")}
        return expected
    if method == "bitfit":
        expected |= in_window(r"(^|\.)bias$")
    if cfg.train_layer_norm:
        expected |= in_window(r"(LayerNorm|layer_norm)\.(weight|bias)$")
    for index in window:
        layer = f"{root}.{index}."
        for site in ADAPTER_SITES.get(method, ()):
            expected |= {f"{layer}adapter_{site}.{proj}.{kind}" for proj in ("down", "up") for kind in ("weight", "bias")}
        if method in ("prefix", "mam"):
            expected |= {f"{layer}{ATTENTION[arch]}.prefix_encoder.{name}" for name in PREFIX_PARAMS}
        if method == "lora":
            expected |= {f"{layer}{ATTENTION[arch]}.{target}.lora_{ab}.default.weight"
                         for target in LORA_TARGETS[arch] for ab in "AB"}
    return expected


def cases(archs=tuple(ARCHS)):
    """Methods that tune a window (the head-only ones: tests/test_probe_tuning.py)."""
    return [(method, arch) for method in METHODS for arch in archs
            if not (arch not in PREFIX_ARCHS and method in ("prefix", "mam")) and method not in HEAD_ONLY_METHODS]


@pytest.mark.parametrize("select", list(SELECTS))
@pytest.mark.parametrize("method,arch", cases())
def test_method_trains_exactly_its_parameters_and_nothing_below(method, arch, select):
    model = build(arch, select, method)
    cfg = tuning_config(method)
    expected = expected_trainable(model, arch, method, cfg)
    assert trainable(model) == expected
    injected = {name for name, _ in model.named_parameters() if re.search(r"(^|\.)(adapter|prefix|lora)_", name)}
    assert injected <= expected  # nothing injected outside the window, nothing injected stays frozen

    frozen_below = model.selection.frozen_layers
    captured = []
    if frozen_below:
        hook = model.layers[frozen_below[-1] - 1].register_forward_hook(
            lambda module, args, output: captured.append((output[0] if isinstance(output, tuple) else output).detach().clone()))
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    logits(model)
    one_step(model)
    logits(model)

    if frozen_below:
        hook.remove()
        assert torch.equal(captured[0], captured[-1]), "the frozen layer below the window changed its output"
    for name, parameter in model.named_parameters():
        if name not in expected:
            assert torch.equal(before[name], parameter), f"frozen {name} changed"
    assert any(not torch.equal(before[name], parameter) for name, parameter in model.named_parameters()
               if name in expected and name.startswith("backbone.")), "no window parameter changed"


@pytest.mark.parametrize("method,arch", [(m, a) for m, a in cases() if m in STARTS_PRETRAINED])
def test_zero_init_methods_start_as_the_pretrained_model(method, arch):
    model = build(arch, "top")
    pretrained = logits(model)
    torch.manual_seed(2)
    METHODS[method](model, tuning_config(method))
    torch.testing.assert_close(logits(model), pretrained, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method,arch", cases())
def test_save_load_restores_outputs_exactly(method, arch, tmp_path):
    model = build(arch, "manual", method)
    one_step(model)
    save_trainable(model, tmp_path / "trainable.pt")
    fresh = build(arch, "manual", method, seed=3)
    load_trainable(fresh, tmp_path / "trainable.pt")
    assert torch.equal(logits(fresh), logits(model))


def test_load_into_another_method_fails(tmp_path):
    save_trainable(build("bert", "top", "adapter"), tmp_path / "adapter.pt")
    with pytest.raises(ConfigError, match="does not match the model's trainable parameters"):
        load_trainable(build("bert", "top", "lora"), tmp_path / "adapter.pt")
    with pytest.raises(ConfigError, match="shape"):
        load_trainable(build("bert", "top", "adapter", bottleneck=8), tmp_path / "adapter.pt")


@pytest.mark.parametrize("arch", list(ARCHS))
def test_scaled_pa_scales_the_parallel_adapter(arch):
    plain, scaled = build(arch, "top", "parallel_adapter"), build(arch, "top", "scaled_pa")
    assert [m.scale for n, m in scaled.named_modules() if n.endswith("adapter_ffn")] == [4.0, 4.0]
    assert TuningConfig().scale == 1.0  # s = 4 comes from conf/tuning/scaled_pa.yaml only
    with torch.no_grad():
        for adapter in (m for n, m in plain.named_modules() if n.endswith("adapter_ffn")):
            adapter.up.weight.normal_()
    scaled.load_state_dict(plain.state_dict())
    assert not torch.allclose(logits(plain), logits(scaled))


def test_injected_modules_follow_deep_copies():
    model = build("bert", "top", "adapter")
    original = logits(model)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for name, parameter in twin.named_parameters():
            if "adapter_" in name and name.endswith("up.weight"):
                parameter.normal_()
    assert not torch.allclose(logits(twin), original)
    assert torch.equal(logits(model), original)


# --- prefix tuning: the prefixes are extra keys/values every real query attends to ---------------------------------

def _empty_prefixes(model):
    for module in model.modules():
        if isinstance(module, PrefixEncoder):
            def empty(batch_size, module=module):
                head_dim = module.embedding.shape[1] // module.num_heads
                shape = (batch_size, module.num_heads, 0, head_dim)
                return torch.zeros(shape), torch.zeros(shape)
            module.forward = empty


@pytest.mark.parametrize("arch", PREFIX_ARCHS)
def test_prefix_attention_without_prefixes_is_the_pretrained_attention(arch):
    pretrained = logits(build(arch, "top"))
    model = build(arch, "top", "prefix")
    assert not torch.allclose(logits(model), pretrained)
    _empty_prefixes(model)
    torch.testing.assert_close(logits(model), pretrained)


@pytest.mark.parametrize("arch", PREFIX_ARCHS)
def test_every_real_token_attends_to_the_prefix_and_padding_stays_masked(arch):
    model = build(arch, "top", "prefix")
    input_ids, attention_mask, _ = batch()
    real = attention_mask.bool()

    def hidden(ids):
        with torch.no_grad():
            return model.backbone(input_ids=ids, attention_mask=attention_mask).last_hidden_state

    reference = hidden(input_ids)
    other_padding = torch.where(real, input_ids, torch.full_like(input_ids, 7))
    torch.testing.assert_close(hidden(other_padding)[real], reference[real])

    last_prefix = model.layers[-1].get_submodule(ATTENTION[arch]).prefix_encoder
    with torch.no_grad():
        last_prefix.embedding.add_(1.0)
    changed = (hidden(input_ids) - reference).abs().amax(-1)
    assert bool((changed[real] > 0).all())


def test_mpnet_prefix_attention_matches_a_reference():
    """MPNet's attention is re-implemented with prefixes: check it against the formula, where
    prefixes get no relative-position bias and every query sees them."""
    model = build("mpnet", "top", "prefix")
    attention = model.layers[-1].attention.attn
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 5, 32, generator=generator)
    mask = torch.zeros(2, 1, 5, 5)
    mask[0, ..., -2:] = torch.finfo(torch.float32).min
    bias = model.backbone.encoder.compute_position_bias(hidden)
    with torch.no_grad():
        output = attention(hidden, mask, bias)[0]
        heads, head_dim = 2, 16
        q, k, v = (linear(hidden).view(2, 5, heads, head_dim).transpose(1, 2) for linear in (attention.q, attention.k, attention.v))
        prefix_key, prefix_value = attention.prefix_encoder(2)
        scores = torch.cat([q @ prefix_key.transpose(-1, -2) / head_dim**0.5,
                            q @ k.transpose(-1, -2) / head_dim**0.5 + bias + mask], dim=-1)
        context = scores.softmax(-1) @ torch.cat([prefix_value, v], dim=2)
        expected = attention.o(context.transpose(1, 2).reshape(2, 5, 32))
    torch.testing.assert_close(output, expected)


def test_prefix_is_the_same_under_eager_and_sdpa():
    outputs = []
    for implementation in ("eager", "sdpa"):
        config = AutoConfig.for_model("bert", **TINY)
        config._attn_implementation = implementation
        backbone = AutoModel.from_config(config).eval()
        backbone.load_state_dict(_pretrained("bert").state_dict())
        torch.manual_seed(1)
        model = LayerClassifier(truncate(backbone, NUM_LAYERS), select_layers(SELECTS["top"], NUM_LAYERS), NUM_LABELS)
        torch.manual_seed(2)
        METHODS["prefix"](model, tuning_config("prefix"))
        outputs.append(logits(model.eval()))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)


def test_prefix_without_reparametrisation_trains_the_prefixes_directly():
    model = build("bert", "top", "prefix", prefix_hidden=0)
    assert {name for name in trainable(model) if "prefix_" in name} == {
        f"backbone.encoder.layer.{index}.attention.self.prefix_encoder.key_value" for index in (2, 3)}


# --- configs and invalid settings ----------------------------------------------------------------------------------

def test_every_method_has_a_config_and_every_config_a_method():
    assert {path.stem for path in CONF.glob("*.yaml")} == set(METHODS)
    for method in METHODS:
        assert tuning_config(method).name == method


@pytest.mark.parametrize("method", ["prefix", "mam"])
def test_prefix_methods_refuse_deberta_v2(method):
    with pytest.raises(ConfigError, match="does not support 'deberta-v2'"):
        build("deberta-v2", "top", method)


def test_schema_rejects_bad_sizes_and_names():
    with pytest.raises(ConfigError, match="bottleneck"):
        TuningConfig(name="adapter", bottleneck=0)
    with pytest.raises(ConfigError, match="lora_r"):
        TuningConfig(name="lora", lora_r=0)
    with pytest.raises(ConfigError, match="is not one of"):
        TuningConfig(name="houlsby")


@pytest.mark.parametrize("method,overrides,message", [
    ("parallel_adapter", {"scale": 0.0}, "scale"),
    ("prefix", {"prefix_hidden": -1}, "prefix_hidden"),
    ("lora", {"lora_dropout": 1.0}, "lora_dropout"),
    ("lora", {"lora_target_modules": ["no_such_linear"]}, "no_such_linear"),
])
def test_methods_reject_invalid_settings(method, overrides, message):
    with pytest.raises(ConfigError, match=message):
        build("bert", "top", method, **overrides)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method,arch", [(m, a) for m in ("adapter", "scaled_pa", "mam", "lora") for a in ("bert", "mpnet")])
def test_injected_modules_move_to_cuda(method, arch):
    model = build(arch, "top", method)
    on_cpu = logits(model)
    model.to("cuda")
    input_ids, attention_mask, labels = (tensor.cuda() for tensor in batch())
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids, attention_mask).cpu(), on_cpu, rtol=1e-4, atol=1e-4)
    model.train()
    F.cross_entropy(model(input_ids, attention_mask), labels).backward()
    assert all(p.grad is not None and p.grad.is_cuda for p in model.parameters() if p.requires_grad)
