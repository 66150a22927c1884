"""The official code's choices as options: distinct regression classes, a window below the head,
the RoBERTa head (shuox20/variability-efficient-tuning; ../shared/METHODS.md section 1)."""

import numpy as np
import pytest
import torch
from hydra import compose
from transformers import RobertaConfig
from transformers.models.roberta.modeling_roberta import RobertaClassificationHead

from hsv_exp import data as data_lib
from hsv_exp.classifier import LayerClassifier, RobertaHead
from hsv_exp.compute import accounting
from hsv_exp.config import SelectConfig, TaskConfig, TuningConfig, to_config
from hsv_exp.errors import ConfigError
from hsv_exp.frozen_cache import prefix_states, split_forward, window_logits
from hsv_exp.results.runs import _condition_key
from hsv_exp.scan import class_names
from hsv_exp.selection import select_layers
from hsv_exp.truncation import truncate
from hsv_exp.tuning import METHODS
from hsv_exp.variability import direct_scores

from conftest import tiny_model

pytestmark = pytest.mark.usefixtures("hydra_conf")  # conftest.py


STSB = dict(name="stsb", text_fields=["sentence1", "sentence2"], is_regression=True, metrics=["pearson"], main_metric="pearson")


# ---------------------------------------------------------------- task.regression_classes
def official_nu(states: np.ndarray, classes: np.ndarray) -> float:
    """compute_nc of the official nc/utils/nc_function.py in numpy: Sigma_b = covariance of the class
    means about the mean of the class means (1/K), Sigma_w = unweighted mean of the per-class
    population covariances (one example: 0), nu = tr(Sigma_w pinv(Sigma_b)) / K. pinv keeps the
    K-1 non-zero singular values of Sigma_b (its rank; hsv_exp's rank-(K-1) treatment)."""
    values = np.unique(classes)
    K = len(values)
    means = np.stack([states[classes == value].mean(0) for value in values])
    covariances = np.stack([np.cov(states[classes == value].T, bias=True) if (classes == value).sum() > 1
                            else np.zeros((states.shape[1],) * 2) for value in values])
    centred = means - means.mean(0)
    sigma_b = centred.T @ centred / K
    assert np.linalg.matrix_rank(sigma_b, tol=1e-10 * np.abs(sigma_b).max()) == K - 1
    return float(np.trace(covariances.mean(0) @ np.linalg.pinv(sigma_b, rcond=1e-10, hermitian=True)) / K)


def test_distinct_scores_are_classes_and_singletons_count_in_k():
    rng = np.random.default_rng(0)
    scores = np.array([0.0, 0.0, 0.0, 1.2, 1.2, 2.5, 3.8, 3.8, 3.8, 3.8, 4.6, 5.0], dtype=np.float32)  # 2.5, 4.6, 5.0 once
    dim = 24
    centres = {value: rng.normal(size=dim) * 2 for value in np.unique(scores)}
    states = np.stack([centres[value] + rng.normal(size=dim) for value in scores])
    task = TaskConfig(**STSB, regression_classes="distinct")
    classes = data_lib.class_ids(scores, task)
    assert classes.tolist() == [0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 5]
    assert class_names(task, np.unique(classes), scores) == ["0", "1.2", "2.5", "3.8", "4.6", "5"]
    nu = direct_scores(torch.from_numpy(states)[None], torch.from_numpy(classes))[0]
    assert nu == pytest.approx(official_nu(states, scores), rel=1e-8)
    # Dropping the singletons (K = 3) is another number: they count, with zero scatter.
    kept = np.isin(scores, [0.0, 1.2, 3.8])
    assert abs(official_nu(states[kept], scores[kept]) - nu) > 0.1 * nu


def test_round_is_the_default_and_bins_scores():
    scores = np.array([0.0, 0.4, 1.2, 2.5, 3.8, 4.6, 5.0], dtype=np.float32)
    task = TaskConfig(**STSB)
    assert task.regression_classes == "round"
    classes = data_lib.class_ids(scores, task)
    assert classes.tolist() == [0, 0, 1, 2, 4, 5, 5]
    assert class_names(task, np.unique(classes), scores) == ["0", "1", "2", "4", "5"]
    distinct = data_lib.class_ids(scores, TaskConfig(**STSB, regression_classes="distinct"))
    assert distinct.tolist() == list(range(7))  # other class bytes: another scan content key


def test_regression_classes_is_checked_at_compose():
    assert to_config(compose("config", overrides=["task=stsb", "task.regression_classes=distinct"])).task.regression_classes == "distinct"
    with pytest.raises(ConfigError) as info:
        to_config(compose("config", overrides=["task=stsb", "task.regression_classes=exact"]))
    assert str(info.value) == "task.regression_classes must be round|distinct, got exact"


# ---------------------------------------------------------------- select.last_tuned_layer
BELOW_HEAD = SelectConfig(name="manual", head_layer=4, k=1, last_tuned_layer=2)  # tune layer 2, head on 4


def test_a_window_below_the_head_is_selected():
    selection = select_layers(BELOW_HEAD, 4)
    assert (selection.head_layer, selection.tuned_layers, selection.frozen_layers) == (4, (2,), (1, 3, 4))
    default = select_layers(SelectConfig(name="manual", head_layer=3, k=2), 4)
    assert default.tuned_layers == (2, 3)


@pytest.mark.parametrize("overrides, line", [
    (["select.head_layer=3", "select.k=1", "select.last_tuned_layer=4"],
     "select.last_tuned_layer must be in select.k..select.head_layer (1..3) so the window stays inside layers 1..head, got 4"),
    (["select.head_layer=3", "select.k=2", "select.last_tuned_layer=1"],
     "select.last_tuned_layer must be in select.k..select.head_layer (2..3) so the window stays inside layers 1..head, got 1"),
    (["select.head_layer=3", "select.k=0", "select.last_tuned_layer=2"],
     "select.k=0 (an empty window) trains only the head: use tuning=probe or tuning=linear_probe, not tuning=full"),
])
def test_a_manual_window_outside_the_kept_layers_fails_at_compose(overrides, line):
    with pytest.raises(ConfigError) as info:
        to_config(compose("config", overrides=["select=manual", *overrides]))
    assert str(info.value) == line


def test_last_tuned_layer_is_for_manual_only():
    with pytest.raises(ConfigError) as info:
        to_config(compose("config", overrides=["select=top", "+select.last_tuned_layer=2"]))
    assert str(info.value) == "select.last_tuned_layer is for select=manual only, not select=top"


def below_head_model(dropout: float = 0.1) -> LayerClassifier:
    selection = select_layers(BELOW_HEAD, 4)
    model = LayerClassifier(truncate(tiny_model("bert"), selection.head_layer), selection, num_labels=2, dropout=dropout)
    METHODS["full"](model, TuningConfig())
    return model


def test_a_window_below_the_head_trains_only_its_layer_and_the_head():
    model = below_head_model()
    trainable = set(model.trainable_parameter_names())
    layer_2 = {name for name, _ in model.named_parameters() if ".layer.1." in name}
    assert layer_2 and trainable == layer_2 | {"head.weight", "head.bias"}


def test_layers_above_the_window_run_in_eval_mode_and_pass_the_gradient_down():
    model = below_head_model()
    model.train()
    assert [layer.training for layer in model.layers] == [False, True, False, False]
    ids = torch.randint(5, 100, (3, 7))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    torch.manual_seed(0)
    logits = split_forward(model, inputs)  # the frozen-prefix path: layer 1 under inference_mode
    logits.sum().backward()
    for index, layer in enumerate(model.layers, start=1):
        grads = [parameter.grad for parameter in layer.parameters()]
        if index == 2:
            assert all(grad is not None and grad.abs().sum() > 0 for grad in grads)
        else:
            assert all(grad is None for grad in grads)
    # Same logits as the whole forward pass (layers 3 and 4 in eval mode, no dropout noise there).
    model.eval()
    with torch.no_grad():
        assert torch.allclose(window_logits(model, inputs, prefix_states(model, inputs)), model(**inputs), atol=1e-6)


def test_compute_counts_the_backward_through_frozen_layers_above_the_window():
    layer = 1.0  # fractions only: every layer costs the same
    below = accounting(select_layers(SelectConfig(name="manual", head_layer=5, k=2, last_tuned_layer=3), 6), 384, 1536, 64.0, True)
    # forward 5 layers + backward: 2 tuned layers x 2 + 2 pass-through layers (4, 5) x 1
    assert below["train_flops_fraction"] == pytest.approx((5 + 2 * 2 + 2) * layer / (18 * layer))
    # cached epochs skip layer 1 only: forward 4 layers (2..5)
    assert below["train_flops_fraction_cached"] == pytest.approx((4 + 2 * 2 + 2) / 18)
    pet = accounting(select_layers(SelectConfig(name="manual", head_layer=5, k=2, last_tuned_layer=3), 6), 384, 1536, 64.0, False)
    assert pet["train_flops_fraction"] == pytest.approx((5 + 2 + 2) / 18)


# ---------------------------------------------------------------- model.head
def test_roberta_head_equals_transformers_roberta_classification_head():
    config = RobertaConfig(hidden_size=32, num_labels=3, hidden_dropout_prob=0.1, classifier_dropout=None)
    reference = RobertaClassificationHead(config)
    ours = RobertaHead(32, 3, dropout=0.1)
    ours.load_state_dict(reference.state_dict())  # the same parameter names: dense.*, out_proj.*
    tokens = torch.randn(5, 9, 32)
    for mode in (False, True):
        reference.train(mode), ours.train(mode)
        torch.manual_seed(1)
        expected = reference(tokens)  # reads tokens[:, 0]
        torch.manual_seed(1)
        assert torch.allclose(ours(tokens[:, 0]), expected, atol=1e-6, rtol=0)


def test_the_roberta_head_reads_the_first_token_and_trains():
    selection = select_layers(SelectConfig(name="top", k=1), 4)
    model = LayerClassifier(truncate(tiny_model("roberta"), 4), selection, num_labels=2, pooling="mean", head="roberta")
    METHODS["full"](model, TuningConfig())
    assert {name for name in model.trainable_parameter_names() if name.startswith("head.")} == {
        "head.dense.weight", "head.dense.bias", "head.out_proj.weight", "head.out_proj.bias"}
    model.eval()
    ids = torch.randint(5, 100, (2, 6))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        first = model.backbone(**inputs).last_hidden_state[:, 0]
        assert torch.allclose(model(**inputs), model.head(first), atol=1e-6)
        assert torch.allclose(split_forward(model, inputs), model(**inputs), atol=1e-6)  # the cache path calls the same head


def test_model_head_is_checked_at_compose():
    assert to_config(compose("config", overrides=["model.head=roberta"])).model.head == "roberta"
    with pytest.raises(ConfigError) as info:
        to_config(compose("config", overrides=["model.head=mlp"]))
    assert str(info.value) == "model.head must be linear|roberta, got mlp"


# ---------------------------------------------------------------- results conditions
def test_each_option_is_its_own_results_condition():
    info = {"model": "minilm", "tuning": "full", "select": "manual", "head_layer": 4, "k": 1, "rule": "argmin"}
    plain = _condition_key({**info, "config": {}})
    assert plain == ("minilm", "full", "manual ℓ=4", "—", "1")
    assert _condition_key({**info, "config": {"select": {"last_tuned_layer": 2}}})[2] == "manual ℓ=4 window to 2"
    assert _condition_key({**info, "config": {"model": {"head": "roberta"}}})[0] == "minilm (roberta head)"
    scan = {**info, "select": "variability", "config": {"task": {"regression_classes": "distinct"}}}
    assert _condition_key(scan)[2] == "variability (distinct classes)"
