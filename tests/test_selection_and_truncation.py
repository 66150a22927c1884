"""Selection rules, layer access across encoder layouts, truncation, and what trains."""

import re

import pytest
import torch

from hsv_exp.backbone import find_layers, num_layers
from hsv_exp.classifier import LayerClassifier
from hsv_exp.compute import accounting
from hsv_exp.config import SelectConfig, TuningConfig
from hsv_exp.errors import ConfigError
from hsv_exp.selection import select_layers
from hsv_exp.truncation import truncate, truncate_model
from hsv_exp.tuning import METHODS

from conftest import TINY_KWARGS, tiny_model

SCORES = [9.0, 5.0, 3.0, 2.05, 2.0, 2.5, 4.0]  # nu(0..6); argmin over 1..6 is layer 4


def test_variability_argmin_and_tolerance_rules():
    argmin = select_layers(SelectConfig(name="variability", k=2), 6, SCORES)
    assert (argmin.head_layer, argmin.tuned_layers) == (4, (3, 4))
    tolerant = select_layers(SelectConfig(name="variability", k=2, rule="tolerance", tolerance=0.05), 6, SCORES)
    assert (tolerant.head_layer, tolerant.tuned_layers) == (3, (2, 3))  # 2.05 <= 1.05 * 2.0
    strict = select_layers(SelectConfig(name="variability", k=1, rule="tolerance", tolerance=0.01), 6, SCORES)
    assert strict.head_layer == 4


def test_layer_zero_is_never_the_head():
    scores = [0.1, 5.0, 3.0]  # the embedding output has the lowest nu
    assert select_layers(SelectConfig(name="variability", k=1), 2, scores).head_layer == 2


def test_top_all_manual():
    top = select_layers(SelectConfig(name="top", k=3), 6)
    assert (top.head_layer, top.tuned_layers, top.tune_embeddings) == (6, (4, 5, 6), False)
    everything = select_layers(SelectConfig(name="all"), 6)
    assert (everything.head_layer, everything.tuned_layers, everything.tune_embeddings) == (6, (1, 2, 3, 4, 5, 6), True)
    manual = select_layers(SelectConfig(name="manual", head_layer=3, k=3), 6)
    assert (manual.head_layer, manual.tuned_layers, manual.frozen_layers) == (3, (1, 2, 3), ())


def test_variability_head_below_k_clips_the_window():
    # A data-chosen head can land below k: tune every layer up to it rather than fail the run.
    scores = [9.0, 1.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    selection = select_layers(SelectConfig(name="variability", k=3), 6, scores)
    assert (selection.head_layer, selection.tuned_layers, selection.tune_embeddings) == (1, (1,), False)
    assert "clipped" in selection.rule


@pytest.mark.parametrize("cfg, scores, message", [
    (SelectConfig(name="manual", head_layer=2, k=3), None, "larger than the head layer"),
    (SelectConfig(name="manual", head_layer=7, k=1), None, "outside 1..6"),
    (SelectConfig(name="variability", k=1), None, "needs a variability scan"),
    (SelectConfig(name="variability", k=1), [1.0, 2.0], "expected 7"),
])
def test_bad_selections_fail_clearly(cfg, scores, message):
    with pytest.raises(ConfigError, match=message):
        select_layers(cfg, 6, scores)


@pytest.mark.parametrize("arch", sorted(TINY_KWARGS))
def test_layer_stack_found_and_truncation_removes_layers(arch):
    model = tiny_model(arch)
    assert num_layers(model) == 4
    ids = torch.randint(5, 100, (2, 9))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    params_before = sum(p.numel() for p in model.parameters())
    selection = select_layers(SelectConfig(name="manual", head_layer=2, k=1), 4)
    cut = truncate_model(model, selection.head_layer)
    assert cut.full_params == params_before and cut.full_layers == 4
    classifier = LayerClassifier(cut.encoder, selection, num_labels=3)
    layers = find_layers(classifier.backbone)[2]
    assert len(layers) == 2
    layer_params = sum(p.numel() for p in layers[0].parameters())
    assert params_before - sum(p.numel() for p in classifier.backbone.parameters()) == 2 * layer_params
    classifier.eval()
    with torch.no_grad():
        truncated = classifier.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = classifier(ids, mask)
    assert torch.allclose(truncated, reference[2], atol=1e-5)  # what layer 2 computed in the full model
    assert logits.shape == (2, 3)


def expected_full_names(model, tuned_layers, tune_embeddings):
    """Trainable names computed from the name pattern, independently of tuning/full.py."""
    names = set()
    for name, _ in model.named_parameters():
        match = re.search(r"\.layer\.(\d+)\.", name)
        if name.startswith("head."):
            names.add(name)
        elif match and int(match.group(1)) + 1 in tuned_layers:
            names.add(name)
        elif tune_embeddings and ".embeddings." in name:
            names.add(name)
    return names


@pytest.mark.parametrize("arch", ["bert", "roberta", "mpnet", "distilbert"])
@pytest.mark.parametrize("select", [SelectConfig(name="top", k=2), SelectConfig(name="manual", head_layer=3, k=1),
                                    SelectConfig(name="all")])
def test_full_tuning_trains_exactly_the_window(arch, select):
    selection = select_layers(select, 4)
    model = LayerClassifier(truncate(tiny_model(arch), selection.head_layer), selection, num_labels=2)
    METHODS["full"](model, TuningConfig())
    expected = expected_full_names(model, model.selection.tuned_layers, model.selection.tune_embeddings)
    assert set(model.trainable_parameter_names()) == expected
    assert any(name.startswith("head.") for name in expected)


def test_frozen_layers_stay_in_eval_mode_and_unchanged():
    model = LayerClassifier(tiny_model("bert"), select_layers(SelectConfig(name="manual", head_layer=4, k=2), 4), 2, dropout=0.0)  # 4 of 4 layers: nothing to cut
    METHODS["full"](model, TuningConfig())
    model.train()
    assert not model.layers[0].training and not model.layers[1].training and not model.backbone.embeddings.training
    assert model.layers[2].training and model.layers[3].training
    frozen_before = {k: v.clone() for k, v in model.layers[1].state_dict().items()}
    window_before = model.layers[3].attention.self.query.weight.clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(5, 100, (4, 8))
    loss = torch.nn.functional.cross_entropy(model(ids, torch.ones_like(ids)), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    optimizer.step()
    assert all(torch.equal(frozen_before[k], v) for k, v in model.layers[1].state_dict().items())
    assert not torch.equal(window_before, model.layers[3].attention.self.query.weight)


def test_compute_accounting():
    full = accounting(select_layers(SelectConfig(name="all"), 6), 384, 1536, 64.0, full_layer_weights_train=True)
    assert full["train_flops_fraction"] == pytest.approx(1.0)
    assert full["inference_flops_saving_pct"] == pytest.approx(0.0)
    top = accounting(select_layers(SelectConfig(name="top", k=2), 6), 384, 1536, 64.0, full_layer_weights_train=True)
    assert top["train_flops_fraction"] == pytest.approx((6 + 2 * 2) / 18)  # 6 forward + 2 layers x 2 backward
    low = accounting(select_layers(SelectConfig(name="manual", head_layer=3, k=1), 6), 384, 1536, 64.0, True)
    assert low["train_flops_fraction"] == pytest.approx((3 + 2) / 18)
    assert low["inference_flops_fraction"] == pytest.approx(0.5)
    assert low["train_flops_fraction_cached"] == pytest.approx((1 + 2) / 18)
    pet = accounting(select_layers(SelectConfig(name="top", k=2), 6), 384, 1536, 64.0, False, injected_params=1000)
    assert pet["train_flops_fraction"] < top["train_flops_fraction"]
