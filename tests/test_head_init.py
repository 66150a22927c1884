"""EH-FT / LP-FT head initialisation (hsv_exp/head_init.py) on the five tiny architectures.

What the paper's method needs, checked on the real code path: during stage 1 only the head and
the PET parameters change; stage 2 starts from the pretrained weights bit for bit, with the
stage-1 head, no PET module or parameter, and a fresh optimizer and schedule; SIGTERM inside
either stage resumes to the metrics of an uninterrupted run.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import random
import re
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from hsv_exp.classifier import LayerClassifier
from hsv_exp.truncation import truncate_model
from hsv_exp.config import SelectConfig, TrainConfig, TuningConfig
from hsv_exp.errors import ConfigError, HsvError
from hsv_exp.compute import layer_flops_per_token
from hsv_exp.head_init import (RESULT_FILE, STAGE, HeadInitConfig, compute_summary, pretrain_head, stage1_selection,
                               stage2_model, stage_epochs, train_with_head_init)
from hsv_exp.selection import select_layers
from hsv_exp.train import train
from hsv_exp.tuning import METHODS

from conftest import REPO, sigterm_at_step, tiny_model
from test_training import TASK, toy_data

ARCHS = ("bert", "roberta", "mpnet", "distilbert", "deberta-v2")
SELECTION = select_layers(SelectConfig(name="manual", head_layer=3, k=1), 4)  # window 3; layers 1, 2 frozen; 4 removed
STAGE1 = {"lpft": HeadInitConfig(name="lpft", epochs=1),
          **{method: HeadInitConfig(name="ehft", method=method, epochs=1) for method in ("bitfit", "lora", "prefix")}}
HEAD_INIT_CONF = REPO / "conf" / "head_init"
LAYER_NAME = re.compile(r"^backbone\.(?:encoder|transformer)\.layer\.(\d+)\.(.+)$")
# Expected stage-1 trainable names inside a PET layer, written from each method's documented naming.
PET_NAMES = {
    "lpft": None,
    "bitfit": r"(^|\.)bias$",
    "lora": r"\.lora_[AB]\.default\.weight$",
    "prefix": r"prefix_encoder\.key_value$",
}
LORA_PER_LAYER = 2 * 4  # A and B on each of Q, K, V, O
# pet_layers=kept puts stage 1's window at layer 1 over frozen embeddings: an empty frozen prefix,
# which DeBERTa-v2's encoder cannot run as zero layers (frozen_cache.embedding_output; the regression case).
CASES = [(arch, method, where) for arch in ARCHS for method in STAGE1 for where in ("window", "kept")
         if not (arch == "deberta-v2" and method == "prefix") and not (method == "lpft" and where == "kept")]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@functools.cache
def pretrained(arch: str):
    return tiny_model(arch)


def builder(arch: str, built: list | None = None):
    """build_model for head_init: a fresh classifier on a deep copy of the pretrained backbone (recorded in `built`)."""
    backbone = pretrained(arch)  # built (and seeded) here, not inside a seeded build_model call

    def build(selection):
        model = LayerClassifier(truncate_model(copy.deepcopy(backbone), selection.head_layer).encoder, selection, num_labels=2)
        if built is not None:
            built.append(model)
        return model
    return build


def train_cfg(**overrides) -> TrainConfig:
    return TrainConfig(**{"lr": 1e-3, "epochs": 3, "batch_size": 8, **overrides})


def full(model) -> None:
    METHODS["full"](model, TuningConfig())


def stage1(cfg: HeadInitConfig, arch: str, run_dir, built=None):
    return pretrain_head(cfg, builder(arch, built), SELECTION, toy_data(24, 0), {"dev": toy_data(12, 1)}, TASK,
                         train_cfg(), seed=0, pad_token_id=0, run_dir=run_dir)


@pytest.mark.parametrize("arch,method,where", CASES)
def test_stage1_changes_only_head_and_pet_parameters(arch, method, where, tmp_path):
    cfg = replace(STAGE1[method], pet_layers=where)
    built = []
    result = stage1(cfg, arch, tmp_path, built)
    (model,) = built
    pet_layers = {layer - 1 for layer in stage1_selection(cfg, SELECTION).tuned_layers}  # 0-based
    expected = {"head.weight", "head.bias"}
    if PET_NAMES[method]:
        expected |= {name for name, _ in model.named_parameters()
                     if (match := LAYER_NAME.match(name)) and int(match[1]) in pet_layers and re.search(PET_NAMES[method], match[2])}
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable == expected
    if method == "lora":
        assert len(expected) == 2 + LORA_PER_LAYER * len(pet_layers)
    assert result.trainable_params == sum(parameter.numel() for name, parameter in model.named_parameters() if name in expected)
    original = dict(pretrained(arch).named_parameters())
    moved = set()
    for name, parameter in model.named_parameters():
        source = name.removeprefix("backbone.").replace(".base_layer.", ".")  # LoRA keeps the original weight under base_layer
        if name.startswith("backbone.") and source in original and not torch.equal(parameter, original[source]):
            moved.add(name)
    assert moved <= expected, f"frozen parameters moved in stage 1: {sorted(moved - expected)[:3]}"
    if method == "bitfit":
        assert moved, "no pretrained bias moved"
    torch.manual_seed(0)  # pretrain_head seeds with the run's seed before build_model: this is stage 1's initial head
    fresh_head = builder(arch)(SELECTION).head
    assert not torch.equal(result.head_state["weight"], fresh_head.weight)
    assert all(torch.equal(result.head_state[key], value) for key, value in model.head.state_dict().items())
    assert [record["stage"] for record in result.history] == [STAGE]
    assert result.compute["train_flops"] > 0 and result.compute["layers_tuned"] == len(pet_layers)


def _strip(history):
    return [{key: value for key, value in record.items() if key != "epoch_time_s"} for record in history]


@pytest.mark.parametrize("arch,method", [(arch, method) for arch in ARCHS for method in ("lora", "prefix") if not (arch == "deberta-v2" and method == "prefix")])
def test_stage2_starts_pretrained_with_the_stage1_head_no_pet_and_a_fresh_optimizer(arch, method, tmp_path):
    cfg = STAGE1[method]
    data, dev = toy_data(24, 0), {"dev": toy_data(12, 1)}
    run = train_with_head_init(cfg, builder(arch), SELECTION, full, data, dev, TASK, train_cfg(), 0, 0, run_dir=tmp_path)
    start = stage2_model(builder(arch), SELECTION, 0, run.head_init.head_state, full)  # the chain's own stage-2 builder
    torch.manual_seed(0)
    reference = builder(arch)(SELECTION)  # what head_init=random would train: the same seed, a random head
    full(reference)
    # the backbone: pretrained weights bit for bit, same modules (no injected LoRA layer, no prefix attention class)
    ours, theirs = start.backbone.state_dict(), reference.backbone.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)
    assert [type(module) for module in start.modules()] == [type(module) for module in reference.modules()]
    assert not any(re.search(r"lora_|prefix_", name) for name, _ in start.named_parameters())
    assert not any(hasattr(module, "prefix_encoder") for module in start.modules())
    # the head: the stage-1 head, not the random one
    assert all(torch.equal(start.head.state_dict()[key], value) for key, value in run.head_init.head_state.items())
    assert not torch.equal(start.head.weight, reference.head.weight)
    assert {n for n, p in start.named_parameters() if p.requires_grad} == {n for n, p in reference.named_parameters() if p.requires_grad}
    # a fresh optimizer and schedule: stage 2 found no checkpoint, and equals a plain train() of that model
    assert run.train.resumed_from is None
    plain = train(start, data, dev, TASK, replace(train_cfg(), epochs=2), 0, 0, progress=False)
    assert _strip(run.train.history) == _strip(plain.history)
    assert [record["stage"] for record in run.history] == [STAGE, "train", "train"]


def test_random_head_init_is_the_plain_run(tmp_path):
    data, dev = toy_data(24, 0), {"dev": toy_data(12, 1)}
    run = train_with_head_init(HeadInitConfig(), builder("bert"), SELECTION, full, data, dev, TASK, train_cfg(), 0, 0)
    torch.manual_seed(0)  # as run.py: seed, LayerClassifier, tuning method, train
    model = builder("bert")(SELECTION)
    full(model)
    plain = train(model, data, dev, TASK, train_cfg(), 0, 0, progress=False)
    assert run.head_init is None
    assert _strip(run.train.history) == _strip(plain.history)
    assert [record["stage"] for record in run.history] == ["train"] * 3


def test_compute_counts_both_stages_of_lpft():
    data, dev = toy_data(24, 0), {"dev": toy_data(12, 1)}
    cfg = train_cfg(cache_frozen="memory")
    run = train_with_head_init(STAGE1["lpft"], builder("bert"), SELECTION, full, data, dev, TASK, cfg, 0, 0)
    lengths = [len(feature["input_ids"]) for feature in data.features]
    tokens, layer = sum(lengths), layer_flops_per_token(32, 37, sum(lengths) / len(lengths))
    # 3 kept layers, window = layer 3. Stage 1 (1 epoch, head only): forward 3 layers, the window passes gradients (1).
    # Stage 2 (2 epochs, full FT of the window): 3 forward + 2 backward, then 1 + 2 over the frozen cache.
    stage1, stage2 = tokens * (3 + 1) * layer, tokens * ((3 + 2) + (1 + 2)) * layer
    summary = compute_summary(run, TuningConfig(), data, cfg)
    assert summary["head_init_train_flops"] == pytest.approx(stage1)
    assert summary["stage2_train_flops"] == pytest.approx(stage2)
    assert summary["train_flops_fraction_total"] == pytest.approx((stage1 + stage2) / (3 * 3 * 4 * layer * tokens))
    assert summary["train_time_s_total"] == pytest.approx(run.head_init.train_time_s + run.train.train_time_s)


def test_compute_counts_mvcr_on_stage_2():
    """EH-FT + MVCR: stage 2's FLOPs include the HAEs' extra per token (as without head_init)."""
    from hsv_exp.strategy_config import RegularizerConfig

    data, dev = toy_data(24, 0), {"dev": toy_data(12, 1)}
    cfg = train_cfg(cache_frozen="memory")
    kwargs = {"regularizer": RegularizerConfig(name="mvcr", layers=[3], dims=[8])}
    run = train_with_head_init(STAGE1["lpft"], builder("bert"), SELECTION, full, data, dev, TASK, cfg, 0, 0, train_kwargs=kwargs)
    plain = train_with_head_init(STAGE1["lpft"], builder("bert"), SELECTION, full, data, dev, TASK, cfg, 0, 0)
    extra = run.train.regularizer["extra_train_flops_per_token"]
    tokens = sum(len(feature["input_ids"]) for feature in data.features) * len(run.train.history)
    with_mvcr, without = compute_summary(run, TuningConfig(), data, cfg), compute_summary(plain, TuningConfig(), data, cfg)
    assert extra > 0 and with_mvcr["stage2_train_flops"] == pytest.approx(without["stage2_train_flops"] + extra * tokens)
    assert with_mvcr["train_flops_total"] == pytest.approx(with_mvcr["head_init_train_flops"] + with_mvcr["stage2_train_flops"])


def test_head_init_configs_compose_with_the_schema():
    from omegaconf import OmegaConf

    for name in ("random", "lpft", "ehft"):
        node = OmegaConf.merge(OmegaConf.structured(HeadInitConfig), OmegaConf.load(HEAD_INIT_CONF / f"{name}.yaml"))
        assert OmegaConf.to_object(node) == HeadInitConfig(name=name)


def test_a_completed_stage1_is_reused_and_one_with_other_settings_refused(tmp_path):
    first = stage1(STAGE1["bitfit"], "bert", tmp_path)
    assert (tmp_path / STAGE / RESULT_FILE).is_file()
    assert not (tmp_path / STAGE / "checkpoint").exists()  # train.keep_checkpoint=false
    built = []
    again = stage1(STAGE1["bitfit"], "bert", tmp_path, built)
    assert again.reused and not built  # no model built, no training
    assert all(torch.equal(again.head_state[key], value) for key, value in first.head_state.items())
    assert again.history == first.history
    with pytest.raises(HsvError, match="holds a stage 1 with other settings"):
        stage1(replace(STAGE1["bitfit"], lr=1e-2), "bert", tmp_path)


def test_prefix_on_deberta_v2_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match="prefix tuning .* does not support 'deberta-v2' models"):
        stage1(STAGE1["prefix"], "deberta-v2", tmp_path)
    assert not (tmp_path / STAGE / "checkpoint").exists()


@pytest.mark.parametrize("total,expected", [(10, (1, 9)), (3, (1, 2)), (60, (6, 54)), (20, (2, 18))])
def test_stage1_takes_a_tenth_of_the_epochs_by_default(total, expected):
    assert stage_epochs(HeadInitConfig(name="ehft"), total) == expected
    assert stage_epochs(HeadInitConfig(), total) == (0, total)


def test_a_stage1_that_leaves_no_epoch_for_stage2_is_refused():
    with pytest.raises(ConfigError, match=r"takes 2 of train.epochs=2 epochs for stage 1, leaving none for fine-tuning"):
        stage_epochs(HeadInitConfig(name="lpft", epochs=2), 2)


@pytest.mark.parametrize("overrides,message", [
    ({"name": "warm"}, "head_init.name must be random|lpft|ehft, got warm"),
    ({"method": "adapter"}, "head_init.method must be bitfit|lora|prefix, got adapter"),
    ({"pet_layers": "all"}, "head_init.pet_layers must be window|kept, got all"),
    ({"epochs": 0}, "head_init.epochs must be >= 1"),
    ({"fraction": 1.0}, r"head_init.fraction must be in \(0, 1\), got 1.0"),
    ({"lr": 0.0}, "head_init.lr must be > 0, got 0.0"),
])
def test_bad_head_init_values_fail_with_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        HeadInitConfig(**overrides)


def test_stage1_learning_rates_are_the_authors():
    assert HeadInitConfig(name="lpft").stage1_lr == 1e-3
    assert HeadInitConfig(name="ehft").stage1_lr == 5e-4  # BitFit
    assert HeadInitConfig(name="ehft", method="lora").stage1_lr == 5e-4
    assert HeadInitConfig(name="ehft", method="prefix").stage1_lr == 5e-3
    assert HeadInitConfig(name="ehft", lr=2e-3).stage1_lr == 2e-3


# ---------------------------------------------------------------- SIGTERM in either stage
CHAIN = [sys.executable, str(REPO / "tests" / "head_init_chain.py")]
STEPS = 10  # per epoch in head_init_chain.py; stage 1 = steps 1..20, stage 2 = steps 21..40 (counted over both)


def comparable(metrics):
    return {"history": _strip(metrics["history"]), "best": _strip([metrics["best"]]), "last": _strip([metrics["last"]])}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    done = subprocess.run([*CHAIN, str(run_dir)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("stage,steps", [(STAGE, (2, 2 * STEPS - 1)), ("train", (2 * STEPS + 2, 4 * STEPS - 1))])
def test_sigterm_inside_a_stage_then_resume_gives_identical_metrics(stage, steps, reference, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    kill_at = random.Random().randint(*steps)
    code = sigterm_at_step([*CHAIN, str(tmp_path)], kill_at, env, step_line=lambda line: line.startswith("step "))
    assert code == 143, f"killed at step {kill_at}"
    assert not (tmp_path / "metrics.json").exists()
    stage1_done = (tmp_path / STAGE / RESULT_FILE).is_file()
    assert stage1_done == (stage == "train"), f"killed at step {kill_at}"
    assert (tmp_path / (STAGE if stage == STAGE else ".") / "checkpoint" / "last.pt").is_file()
    resumed = subprocess.run([*CHAIN, str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ours = json.loads((tmp_path / "metrics.json").read_text())
    assert ours["head_init"]["reused"] == (stage == "train")
    assert (ours["resumed_from"] is not None) == (stage == "train")
    assert comparable(ours) == comparable(reference), f"killed at step {kill_at}"
    assert ours["wall_s"] >= ours["train_time_s"]  # both stages and both processes count
