"""MVCR over tiny random encoders: plugged out it is the plain model, plugged in it perturbs,
its reconstruction never touches the encoder, and its paths are drawn as the authors draw them.

Training steps go through `mvcr.reference_step`, the call sites hsv_exp/train.py copies.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import get_linear_schedule_with_warmup

from conftest import TINY_KWARGS, tiny_model
from hsv_exp.classifier import LayerClassifier
from hsv_exp.compute import accounting
from hsv_exp.config import SelectConfig
from hsv_exp.errors import ConfigError
from hsv_exp.frozen_cache import prefix_states, window_logits
from hsv_exp.regularizers import attach as attach_any
from hsv_exp.regularizers.mvcr import (HAE, InsertionPoint, RegularizerConfig, attach, extra_train_flops_per_token,
                                       hae_flops_per_token, insertion_layers, reference_step)
from hsv_exp.selection import Selection, select_layers
from hsv_exp.tuning.state import trainable_state

ARCHS = tuple(TINY_KWARGS)
NUM_LABELS = 3
CFG = RegularizerConfig(name="mvcr", dims=[8, 16])  # small widths for the 32-wide tiny models


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def build(arch: str, k: int = 2) -> LayerClassifier:
    """select=top k=2 on 4 layers: window 3, 4; layers 1, 2 frozen; MVCR's default points 2 (prefix), 3, 4."""
    torch.manual_seed(1)
    model = LayerClassifier(tiny_model(arch), select_layers(SelectConfig(name="top", k=k), 4), NUM_LABELS)
    for layer in model.window_layers():
        layer.requires_grad_(True)  # full fine-tuning of the window
    return model.eval()


def batch():
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 100, (4, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, -3:] = 0
    labels = torch.randint(0, NUM_LABELS, (4,), generator=generator)
    return input_ids, attention_mask, labels


def eval_logits(model) -> torch.Tensor:
    input_ids, attention_mask, _ = batch()
    model.eval()
    with torch.no_grad():
        return model(input_ids, attention_mask)


def train_steps(model, mvcr, steps: int = 2, ae_only: bool = False, lr: float = 1e-2) -> None:
    input_ids, attention_mask, labels = batch()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, 10)
    model.train()
    for _ in range(steps):
        loss = F.cross_entropy(model(input_ids, attention_mask), labels)
        reference_step(model, mvcr, optimizer, scheduler, None if ae_only else loss)
    model.eval()


def model_state(model) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def test_default_layers_map_the_authors_7_9_12_onto_the_kept_layers():
    def layers(head, tuned, num_layers=12, requested=()):
        return insertion_layers(Selection(head, tuple(tuned), num_layers), list(requested))

    assert layers(12, range(1, 13)) == [7, 9, 12]
    assert layers(6, (5, 6), 6) == [4, 5, 6]  # MiniLM, top k=2: 3.5 -> 4, 4.5 -> 5
    assert layers(4, (3, 4), 4) == [2, 3, 4]
    assert layers(12, (11, 12)) == [10, 12]  # 7 and 9 are below the prefix output: raised to 10, deduplicated
    assert layers(12, (11, 12), requested=(12, 10)) == [10, 12]
    with pytest.raises(ConfigError, match=r"^regularizer.layers \[9\] cannot be perturbed: MVCR acts on the output "
                                          r"of a window layer \(11..12\) or of the frozen prefix \(layer 10\)$"):
        layers(12, (11, 12), requested=(9, 12))


@pytest.mark.parametrize("overrides, line", [
    (dict(name="mvrc"), "regularizer.name must be none or mvcr, got 'mvrc'"),
    (dict(dims=[128, 255]), "regularizer.dims must be even widths >= 2 (a sub-AE halves them), got [128, 255]"),
    (dict(layers=[3, 3]), "regularizer.layers must be distinct layer numbers >= 0, got [3, 3]"),
    (dict(warmup_epochs=-1), "regularizer.warmup_epochs must be >= 0, got -1"),
    (dict(lr_multiplier=0.0), "regularizer.lr_multiplier and regularizer.max_grad_norm must be > 0"),
    (dict(dropout=1.0), "regularizer.noise_std must be >= 0 and regularizer.dropout in [0, 1), got 0.002, 1.0"),
])
def test_bad_config_fails_with_one_line(overrides, line):
    with pytest.raises(ConfigError) as error:
        RegularizerConfig(**overrides)
    assert str(error.value) == line


def test_none_attaches_nothing():
    assert attach_any(build("bert"), RegularizerConfig(), lr=1e-3) is None


@pytest.mark.parametrize("arch", ARCHS)
def test_plugged_out_is_the_plain_model_bitwise(arch):
    model, plain = build(arch), build(arch)
    names_before = [name for name, _ in model.named_parameters()]
    mvcr = attach(model, CFG, lr=1e-2)
    assert torch.equal(eval_logits(model), eval_logits(plain))  # attached, eval mode: identity
    train_steps(model, mvcr)
    attached = eval_logits(model)
    mvcr.remove()
    assert torch.equal(eval_logits(model), attached)
    assert [name for name, _ in model.named_parameters()] == names_before
    assert all(not layer._forward_hooks and not layer._forward_pre_hooks for layer in model.layers)
    assert set(trainable_state(model)) == set(trainable_state(plain))  # what a run saves: no AE parameter


@pytest.mark.parametrize("arch", ARCHS)
def test_ae_only_phase_changes_only_ae_parameters(arch):
    model = build(arch)
    mvcr = attach(model, CFG, lr=1e-2)
    before = model_state(model)
    outer = {name: p for name, p in mvcr.points.named_parameters() if ".inner." not in name}  # used at every call
    outer_before = {name: p.detach().clone() for name, p in outer.items()}
    train_steps(model, mvcr, ae_only=True)
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)  # PLM and head bitwise unchanged
    assert all(not torch.equal(outer_before[name], p) for name, p in outer.items())


@pytest.mark.parametrize("arch", ARCHS)
def test_reconstruction_gradient_never_reaches_the_encoder(arch):
    """The model's gradients from mvcr.backward(loss) equal those of loss.backward() alone on the same forward."""
    model = build(arch)
    mvcr = attach(model, CFG, lr=1e-2)
    input_ids, attention_mask, labels = batch()
    model.train()
    grads = []
    for with_reconstruction in (True, False):
        torch.manual_seed(5)  # the same noise, paths and dropout masks in both forwards
        loss = F.cross_entropy(model(input_ids, attention_mask), labels)
        model.zero_grad(set_to_none=True)
        if with_reconstruction:
            mvcr.backward(None)
            assert all(p.grad is None for p in model.parameters())
            mvcr.backward(loss)
        else:
            loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    assert all(torch.equal(grads[0][name], grads[1][name]) for name in grads[0])


@pytest.mark.parametrize("arch", ARCHS)
def test_task_gradient_reaches_the_window_through_the_perturbation(arch):
    model, plain = build(arch), build(arch)
    mvcr = attach(model, RegularizerConfig(name="mvcr", dims=[8, 16], layers=[3]), lr=1e-2)  # after window layer 3
    input_ids, attention_mask, labels = batch()
    for each in (model, plain):
        each.train()
        torch.manual_seed(5)
        F.cross_entropy(each(input_ids, attention_mask), labels).backward()
    layer3 = [name for name, p in model.layers[2].named_parameters() if p.requires_grad]
    grad = dict(model.layers[2].named_parameters())
    plain_grad = dict(plain.layers[2].named_parameters())
    assert all(grad[name].grad is not None and grad[name].grad.abs().sum() > 0 for name in layer3)
    assert any(not torch.allclose(grad[name].grad, plain_grad[name].grad) for name in layer3)
    assert all(hae.encoder.weight.grad is not None for hae in mvcr.points["3"].haes)  # and the AEs (ae_task_gradient)


def test_every_example_of_a_batch_takes_the_same_path_at_a_position():
    torch.manual_seed(0)
    point = InsertionPoint(hidden=6, dims=[4, 6], dropout=0.2, noise_std=0.0)
    seen = []
    for hae in point.haes:
        hae.register_forward_hook(lambda module, args, output: seen.append(output.detach()))
    hidden = torch.randn(5, 40, 6)
    out = point(hidden).detach()
    choice = point.last_choice
    for position, path in enumerate(choice.tolist()):
        source = hidden if path == len(point.haes) else seen[path]
        assert torch.equal(out[:, position], source[:, position])
    assert set(choice.tolist()) == {0, 1, 2}


def test_path_frequencies_are_the_authors():
    """n = 3 HAEs: 1/5 each, 2/5 identity; 30,000 positions: std of a frequency <= 0.0029, tolerance 0.015 (> 5 std).
    Each HAE's inner path: sub-AE 1, 2, none at 1/3 each over 3,000 calls: std 0.0086, tolerance 0.04."""
    torch.manual_seed(0)
    point = InsertionPoint(hidden=4, dims=[2, 2, 2], dropout=0.2, noise_std=0.002)
    with torch.no_grad():
        point(torch.zeros(1, 30_000, 4))
    frequencies = torch.bincount(point.last_choice, minlength=4).double() / 30_000
    assert torch.allclose(frequencies, torch.tensor([0.2, 0.2, 0.2, 0.4], dtype=torch.double), atol=0.015)
    hae, inner = HAE(hidden=4, dim=2, dropout=0.2), []
    with torch.no_grad():
        for _ in range(3_000):
            hae(torch.zeros(1, 1, 4))
            inner.append(hae.last_inner)
    inner_frequencies = torch.bincount(torch.tensor(inner), minlength=3).double() / 3_000
    assert torch.allclose(inner_frequencies, torch.full((3,), 1 / 3, dtype=torch.double), atol=0.04)


@pytest.mark.parametrize("arch", ("bert", "deberta-v2"))
def test_the_prefix_point_perturbs_cached_states_and_the_cache_stays_clean(arch):
    model = build(arch)
    mvcr = attach(model, CFG, lr=1e-2)
    assert mvcr.layers == [2, 3, 4]
    input_ids, attention_mask, labels = batch()
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    model.eval()
    clean = prefix_states(model, inputs)
    model.train()
    assert torch.equal(prefix_states(model, inputs), clean)  # the prefix itself is never perturbed
    assert mvcr.points["2"].reconstruction_loss is None
    loss = F.cross_entropy(window_logits(model, inputs, clean), labels)
    assert mvcr.points["2"].reconstruction_loss is not None  # the pre-hook on window layer 3 ran
    encoder = mvcr.points["2"].haes[0].encoder.weight
    encoder_before = encoder.detach().clone()
    mvcr.backward(loss)
    mvcr.step()
    assert not torch.equal(encoder, encoder_before)
    torch.manual_seed(3)
    assert not torch.equal(mvcr.perturb_prefix(clean), clean)
    model.eval()
    assert torch.equal(mvcr.perturb_prefix(clean), clean)


def test_state_dict_resumes_the_aes_and_their_optimizers():
    model = build("bert")
    mvcr = attach(model, CFG, lr=1e-2)
    train_steps(model, mvcr)
    state = copy.deepcopy(mvcr.state_dict())
    other = attach(copy.deepcopy(model), CFG, lr=1e-2)
    other.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(mvcr.parameters(), other.parameters()))
    assert other.ae_optimizers[0].state_dict()["state"][0]["step"] == 2


def test_flops_inference_unchanged_and_training_extra_counts_the_haes():
    model = build("bert")
    hidden = model.backbone.config.hidden_size
    before = accounting(model.selection, hidden, 37, 9.0, True)
    mvcr = attach(model, CFG, lr=1e-2)
    train_steps(model, mvcr)
    mvcr.remove()
    assert accounting(model.selection, hidden, 37, 9.0, True) == before
    hae = HAE(hidden, 16, 0.2)
    outer = hae.encoder.weight.numel() + hae.decoder.weight.numel()
    inner = sum(p.numel() for name, p in hae.inner[0].named_parameters() if name.endswith("weight"))
    assert hae_flops_per_token(hidden, 16) == pytest.approx(2 * outer + (2 / 3) * 2 * inner)
    assert extra_train_flops_per_token(hidden, [8, 16], 3) == pytest.approx(
        15 * (hae_flops_per_token(hidden, 8) + hae_flops_per_token(hidden, 16)))
    assert extra_train_flops_per_token(hidden, [8], 1, ae_only=True) == pytest.approx(3 * hae_flops_per_token(hidden, 8))
