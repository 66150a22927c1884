"""The head-only methods (issue 13): tuning=probe trains exactly the head through the frozen cache,
tuning=linear_probe is the closed-form fit of hsv_exp.probe, and the head learning rate reaches the
head's parameter group only."""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, TINY_KWARGS, tiny_model
from custom_task import write_task

from hsv_exp import data as data_lib
from hsv_exp.backbone import load_backbone, load_tokenizer
from hsv_exp.classifier import LayerClassifier
from hsv_exp.compute import accounting
from hsv_exp.config import ModelConfig, SelectConfig, TaskConfig, TrainConfig, TuningConfig
from hsv_exp.frozen_cache import prefix_states, split_forward, window_logits
from hsv_exp.probe import layer_states, probe_score
from hsv_exp.selection import select_layers
from hsv_exp.train import _optimizer, train
from hsv_exp.truncation import truncate
from hsv_exp.tuning import METHODS, apply_method

HEAD = {"head.weight", "head.bias"}
SELECTS = {"top": SelectConfig(name="top", k=0), "manual": SelectConfig(name="manual", head_layer=3, k=0)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls gain nothing from threads on a busy machine
    yield
    torch.set_num_threads(threads)


def build(arch: str, select: str, method: str = "probe") -> LayerClassifier:
    selection = select_layers(SELECTS[select], 4)
    model = LayerClassifier(truncate(tiny_model(arch), selection.head_layer), selection, 3)
    apply_method(model, TuningConfig(name=method))
    return model


def inputs():
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 100, (4, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, -3:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@pytest.mark.parametrize("select", list(SELECTS))
@pytest.mark.parametrize("arch", list(TINY_KWARGS))
def test_probe_trains_exactly_the_head_through_the_whole_frozen_encoder(arch, select):
    model = build(arch, select)
    assert model.selection.tuned_layers == () and model.selection.first_tuned == model.selection.head_layer + 1
    assert {name for name, parameter in model.named_parameters() if parameter.requires_grad} == HEAD
    before = copy.deepcopy(model.state_dict())
    model.train()
    assert not any(module.training for module in model._frozen)  # every kept layer and the embeddings
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    torch.nn.functional.cross_entropy(model(**inputs()), torch.tensor([0, 1, 2, 0])).backward()
    optimizer.step()
    changed = {name for name, value in model.state_dict().items() if not torch.equal(value, before[name])}
    assert changed == HEAD
    model.eval()
    with torch.no_grad():
        expected = model(**inputs())
        assert torch.allclose(split_forward(model, inputs()), expected, atol=1e-5)
        # the cached prefix is the head layer's output: the window is only the pooling and the head
        states = prefix_states(model, inputs())
        assert torch.allclose(window_logits(model, inputs(), states), expected, atol=1e-5)


def test_probe_refuses_a_window():
    selection = select_layers(SelectConfig(name="top", k=1), 4)
    model = LayerClassifier(truncate(tiny_model("bert"), 4), selection, 2)
    with pytest.raises(ValueError, match="trains only the head"):
        METHODS["probe"](model, TuningConfig(name="probe"))


def test_accounting_of_an_empty_window_is_the_forward_pass_only():
    selection = select_layers(SelectConfig(name="top", k=0), 6)
    compute = accounting(selection, 384, 1536, 50.0, full_layer_weights_train=False)
    assert compute["layers_tuned"] == 0 and compute["layers_kept"] == 6
    assert compute["train_flops_fraction"] == pytest.approx(1 / 3)  # forward of 6 layers vs 3 x 6 of full FT
    assert compute["train_flops_per_token_cached"] == 0.0  # cached: the head alone (not counted)


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    """The tiny model of conf/model/tiny.yaml, its tokenizer, and a written task=custom data set."""
    directory = tmp_path_factory.mktemp("custom")
    overrides = write_task(directory)
    model_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(REPO / "conf/model/tiny.yaml")))
    task = TaskConfig(name="custom", text_fields=["text"], label_names=["neg", "pos"],
                      files={"train": str(directory / "train.csv"), "dev": str(directory / "dev.csv")})
    return model_cfg, load_tokenizer(model_cfg), task, overrides


def test_probe_training_uses_the_frozen_cache_and_changes_only_the_head(tiny_task):
    model_cfg, tokenizer, task, _ = tiny_task
    encoded = {name: data_lib.encode(tokenizer, data_lib.load_split(task, name), 64) for name in ("train", "dev")}
    selection = select_layers(SelectConfig(name="top", k=0), 4)
    model = LayerClassifier(truncate(load_backbone(model_cfg, seed=0), 4), selection, 2)
    apply_method(model, TuningConfig(name="probe"))
    before = copy.deepcopy(model.state_dict())
    result = train(model, encoded["train"], {"dev": encoded["dev"]}, task, TrainConfig(epochs=2, batch_size=16, lr=1e-2),
                   seed=0, pad_token_id=tokenizer.pad_token_id, progress=False)
    assert result.cache is not None and result.cache["mode"] == "memory"
    assert {name for name, value in model.state_dict().items() if not torch.equal(value, before[name])} == HEAD
    assert len(result.history) == 2


def test_head_lr_reaches_the_head_group_only(tiny_task):
    selection = select_layers(SelectConfig(name="top", k=2), 4)
    model = LayerClassifier(truncate(tiny_model("bert"), 4), selection, 2)
    apply_method(model, TuningConfig(name="adapter"))
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    optimizer = _optimizer(model, TrainConfig(lr=1e-4, head_lr=3e-2, weight_decay=0.01))
    groups = [({names[id(p)] for p in group["params"]}, group["lr"]) for group in optimizer.param_groups]
    head_groups = [(params, lr) for params, lr in groups if params & HEAD]
    assert head_groups == [(HEAD, 3e-2)]  # the head alone, at head_lr
    others = [lr for params, lr in groups if not params & HEAD]
    assert others and all(lr == 1e-4 for lr in others)
    trained = set().union(*(params for params, _ in groups))
    assert trained == {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    same = _optimizer(model, TrainConfig(lr=1e-4, head_lr=None))
    assert {group["lr"] for group in same.param_groups} == {1e-4}  # head_lr=null: the method's lr
    default = _optimizer(model, TrainConfig(lr=1e-4))
    assert {group["lr"] for group in default.param_groups if group["params"] and
            {names[id(p)] for p in group["params"]} == HEAD} == {2e-2}  # the default head lr


def hsv(run_dir, *overrides):
    command = [sys.executable, "-m", "hsv_exp", f"hydra.run.dir={run_dir}", "model=tiny", "logger=none", *overrides]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_linear_probe_run_scores_what_fit_probe_scores_on_the_same_features(tiny_task, tmp_path):
    model_cfg, tokenizer, task, overrides = tiny_task
    done = hsv(tmp_path / "run", *overrides, "tuning=linear_probe", "train.num_threads=1")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    head = metrics["head_layer"]
    assert metrics["tuned_layers"] == [] and metrics["compute"]["trainable_params"] == 32 * 2 + 2
    assert metrics["best"] == metrics["last"] and len(metrics["history"]) == 1
    assert metrics["compute"]["train_time_s"] > 0

    splits = {name: data_lib.load_split(task, name) for name in ("train", "dev")}
    encoded = {name: data_lib.encode(tokenizer, split, 128) for name, split in splits.items()}
    backbone = load_backbone(model_cfg, seed=0)
    features = {name: layer_states(backbone, value, tokenizer.pad_token_id, "mean")[head] for name, value in encoded.items()}
    expected = probe_score(features["train"], splits["train"].labels, features["dev"], splits["dev"].labels, task)
    assert metrics["best"]["dev/accuracy"] == pytest.approx(expected["accuracy"])
    assert 0.5 < expected["accuracy"] < 1.0  # a fit that learned something, not a trivial score
    assert np.isfinite(metrics["best"]["train/loss"])


@pytest.mark.parametrize("head", ["linear", "roberta"])
def test_a_regression_head_starts_at_the_train_labels_mean(hydra_conf, head):
    """train.regression_bias: label_mean (conf/config.yaml) sets the output bias; init leaves the layer's own."""
    from hydra import compose
    from hsv_exp.config import to_config
    from hsv_exp.run import new_classifier

    labels = np.array([0.5, 2.0, 4.5, 5.0])
    selection = select_layers(SelectConfig(name="top", k=1), 4)
    made = {}
    for overrides in (["task=stsb"], ["task=stsb", "train.regression_bias=init"], ["task=rte"]):
        cfg = to_config(compose("config", overrides=["model=tiny", f"model.head={head}", *overrides]))
        torch.manual_seed(0)
        made[tuple(overrides)] = new_classifier(cfg, cfg.task, truncate(tiny_model("bert"), 4), selection, labels).output_layer.bias
    assert made[("task=stsb",)].tolist() == [pytest.approx(3.0)]
    assert abs(made[("task=stsb", "train.regression_bias=init")].item() - 3.0) > 0.5  # the random init
    assert made[("task=rte",)].abs().max() < 1  # classification: untouched
