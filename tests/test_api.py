"""The Python API (hsv_exp/api.py): the scan's numbers, the selection's layers, the pipeline's
modules, and README's example, run as written."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, tiny_model
from custom_task import examples, write_task

import hsv_exp
from hsv_exp import api
from hsv_exp import data as data_lib
from hsv_exp.backbone import load_backbone, load_tokenizer, num_layers
from hsv_exp.config import ModelConfig
from hsv_exp.probe import layer_states
from hsv_exp.variability import direct_scores


@pytest.fixture(scope="module")
def tiny():
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(REPO / "conf/model/tiny.yaml")))
    return cfg, load_tokenizer(cfg)


def test_import_is_light():
    code = "import sys, hsv_exp; print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.stdout.strip() == "[]", done.stderr
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hsv_exp.nope  # noqa: B018


def test_layer_variability_equals_the_scan_stage_on_the_same_examples(tiny, tmp_path):
    model_cfg, tokenizer = tiny
    overrides = write_task(tmp_path / "data", train=60)
    command = [sys.executable, "-m", "hsv_exp", f"hydra.run.dir={tmp_path / 'scan'}", "stage=scan", "model=tiny",
               "logger=none", *overrides]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    scan = json.loads((tmp_path / "scan" / "variability.json").read_text())
    rows = examples(60, seed=0)  # what write_task wrote as train.csv
    texts, labels = [text for text, _ in rows], [("neg", "pos").index(label) for _, label in rows]
    scores = hsv_exp.layer_variability(load_backbone(model_cfg, seed=0), tokenizer, texts, labels, device="cpu")
    assert len(scores) == 5 and scan["num_examples"] == 60
    assert scores == pytest.approx(scan["scores"], rel=1e-9)


def test_pairs_and_binned_scores(tiny):
    model_cfg, tokenizer = tiny
    backbone = load_backbone(model_cfg, seed=0)
    rows = examples(40, seed=3)
    pairs = [(text, "and " + text[::-1]) for text, _ in rows]
    scores = np.array([0.2, 0.9, 1.4, 2.6] * 10)  # bins (width 1): 0, 1, 1, 3
    got = hsv_exp.layer_variability(backbone, tokenizer, pairs, scores, regression_bin_width=1.0, device="cpu")
    # the reference: the full-covariance definition on one pass's pooled states of the same pairs
    split = data_lib.Split("x", pairs, scores.astype(np.float32), "test")
    states = layer_states(backbone, data_lib.encode(tokenizer, split, 128), tokenizer.pad_token_id, "mean")
    classes = torch.as_tensor(np.unique(np.round(scores), return_inverse=True)[1])
    assert got == pytest.approx(direct_scores(torch.from_numpy(states), classes), rel=1e-3)
    with pytest.raises(ValueError, match="regression_bin_width"):
        hsv_exp.layer_variability(backbone, tokenizer, pairs, scores)


def test_select_layers_picks_as_the_selection_does():
    scores = [9.0, 5.0, 2.0, 2.05, 1.0, 4.0]  # argmin over 1..5: layer 4; within 5% of 1.0: layer 4 too
    assert hsv_exp.select_layers(scores, k=2) == (4, (3, 4))
    assert hsv_exp.select_layers([9.0, 5.0, 1.02, 3.0, 1.0, 4.0], rule="tolerance", k=1) == (2, (2,))
    assert hsv_exp.select_layers(scores, rule="top", k=3) == (5, (3, 4, 5))
    head, window = hsv_exp.select_layers(scores, k=0)
    assert (head, window) == (4, ())


def trainable(module) -> set[str]:
    return {name for name, parameter in module.named_parameters() if parameter.requires_grad}


def test_prepare_truncates_and_trains_exactly_the_method():
    classifier = hsv_exp.prepare(tiny_model("bert"), 3, (2, 3), tuning="bitfit", num_labels=3)
    assert num_layers(classifier.backbone) == 3  # layer 4 removed
    names = trainable(classifier)
    assert {"head.weight", "head.bias"} <= names
    window_names = names - {"head.weight", "head.bias"}
    assert window_names and all(re.match(r"backbone\.encoder\.layer\.[12]\..*bias$", name) for name in window_names)
    assert any("LayerNorm.bias" in name for name in window_names)  # BitFit: LayerNorm biases too, not gains
    # the method's settings are its conf/tuning file's, as tuning=<name> reads them
    assert api.method_config("bitfit").train_layer_norm is False and api.method_config("scaled_pa").scale == 4.0
    assert api.method_config("lora", lora_r=4).lora_r == 4
    adapter = hsv_exp.prepare(tiny_model("bert"), 4, (4,), tuning="adapter", bottleneck=8)
    assert adapter.backbone.encoder.layer[3].adapter_ffn.down.out_features == 8
    probe = hsv_exp.prepare(tiny_model("bert"), 2, (), tuning="probe")
    assert trainable(probe) == {"head.weight", "head.bias"}
    with pytest.raises(ValueError, match="consecutive layers ending at head_layer=3"):
        hsv_exp.prepare(tiny_model("bert"), 3, (1, 2))
    with pytest.raises(ValueError, match="empty window goes with tuning=probe"):
        hsv_exp.prepare(tiny_model("bert"), 3, (), tuning="adapter")


def readme_example() -> str:
    section = (REPO / "README.md").read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S)[1]


def test_readme_example_runs(capsys):
    namespace = {}
    exec(compile(readme_example(), "README.md (Python API)", "exec"), namespace)
    classifier, window, head = namespace["classifier"], namespace["window"], namespace["head"]
    assert len(namespace["scores"]) == 7 and 1 <= head <= 6
    assert num_layers(classifier.backbone) == head
    names = trainable(classifier)
    assert any("adapter_" in name for name in names)
    for name in names - {"head.weight", "head.bias"}:
        layer = int(re.match(r"backbone\.encoder\.layer\.(\d+)\.", name)[1]) + 1
        assert layer in window
    assert f"head on layer {head}" in capsys.readouterr().out
