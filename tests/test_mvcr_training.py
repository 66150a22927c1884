"""MVCR wired into training (hsv_exp.train, the CLI): with every tuning method and architecture a
short run trains, the AE-only epochs change nothing but the AEs, and the model comes back without
the modules; through the CLI it perturbs the frozen cache's states, costs extra training FLOPs
only, saves the same trainable state as a run without it, and resumes after SIGTERM to identical
metrics. The schema/compose checks are in tests/test_config.py, the module's own in tests/test_mvcr.py."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import torch

from conftest import REPO, sigterm_at_step
from hsv_exp.config import TrainConfig
from hsv_exp.strategy_config import RegularizerConfig
from hsv_exp.train import train
from hsv_exp.tuning.state import trainable_state
from test_training import TASK, cli, comparable, toy_data, write_toy_csv
from test_tuning import build, cases

SMALL = RegularizerConfig(name="mvcr", dims=[8, 16], warmup_epochs=1)  # widths for the 32-wide tiny models
FAST = ["regularizer.dims=[8,16]", "regularizer.warmup_epochs=1", "train.epochs=2"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def hook_count(model) -> int:
    return sum(len(module._forward_hooks) + len(module._forward_pre_hooks) for module in model.modules())


@pytest.mark.parametrize("method,arch", cases())
def test_short_mvcr_training_trains_then_removes_cleanly(method, arch):
    """select=top k=2: window 3, 4 over the frozen cache of layers 1, 2; MVCR on 2 (the cached states), 3, 4."""
    model = build(arch, "top", method)
    before, hooks = {name: tensor.clone() for name, tensor in model.state_dict().items()}, hook_count(model)
    after_ae_only = {}

    def log(record):
        if record.get("phase") == "ae_only":
            after_ae_only.update({name: tensor.clone() for name, tensor in model.state_dict().items()})

    cfg = TrainConfig(lr=1e-2, epochs=2, batch_size=8, cache_frozen="memory", precision="fp32")
    result = train(model, toy_data(24, 0), {"dev": toy_data(16, 1)}, TASK, cfg, seed=0, pad_token_id=0, log=log,
                   progress=False, regularizer=SMALL)
    assert result.cache is not None and result.regularizer["layers"] == [2, 3, 4]
    assert set(after_ae_only) == set(before) and all(torch.equal(after_ae_only[name], before[name]) for name in before)
    first, second = result.history
    assert first["phase"] == "ae_only" and "dev/accuracy" not in first and result.best["epoch"] == 2
    assert all(f"mvcr/recon_layer_{layer}" in record for layer in (2, 3, 4) for record in result.history)
    assert any(not torch.equal(tensor, before[name]) for name, tensor in model.state_dict().items())  # the joint epoch trained
    assert hook_count(model) == hooks  # plugged out
    assert set(trainable_state(model)) == set(trainable_state(build(arch, "top", method)))


def hsv(run_dir, *overrides):
    command = [sys.executable, "-m", "hsv_exp", "model=tiny", "experiment=smoke", f"hydra.run.dir={run_dir}",
               "train.keep_checkpoint=true", *overrides]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    saved = torch.load(run_dir / "checkpoint" / "last.pt", weights_only=False)
    return json.loads((run_dir / "metrics.json").read_text()), saved


INFERENCE = ("inference_flops_fraction", "inference_flops_saving_pct", "trainable_params", "params_kept")


@pytest.mark.slow
@pytest.mark.parametrize("tuning,select", [("full", ["select=variability", "select.k=1"]), ("lora", ["select=top", "select.k=2"])])
def test_cli_mvcr_costs_training_flops_only_and_saves_the_plain_model(tmp_path, glue_dir, tuning, select):
    common = [f"task.glue_dir={glue_dir}", f"tuning={tuning}", *select, "train.epochs=2"]
    plain, plain_saved = hsv(tmp_path / "plain", *common)
    ours, saved = hsv(tmp_path / "mvcr", *common, "regularizer=mvcr", *FAST)
    compute = ours["compute"]
    info = {key.removeprefix("regularizer_"): value for key, value in compute.items() if key.startswith("regularizer_")}
    assert compute["regularizer"] == "mvcr" and "regularizer" not in plain["compute"]
    lowest = min(ours["tuned_layers"]) - 1
    assert set(info["layers"]) <= {lowest, *ours["tuned_layers"]}
    if select[0] == "select=top":  # the default layers 2, 3, 4 include the frozen prefix's (cached) output
        assert info["layers"] == [2, 3, 4] and lowest == 2
    assert all(f"mvcr/recon_layer_{layer}" in ours["history"][-1] for layer in info["layers"])
    assert ours["history"][0]["phase"] == "ae_only"
    assert ours["best"]["epoch"] == 2
    assert {key: compute[key] for key in INFERENCE} == {key: plain["compute"][key] for key in INFERENCE}
    assert compute["train_flops_per_token"] == pytest.approx(plain["compute"]["train_flops_per_token"] + info["extra_train_flops_per_token"])
    assert set(saved["trainable"]) == set(plain_saved["trainable"])
    assert "regularizer" in saved and "regularizer" not in plain_saved  # the AEs' state travels in the checkpoint only


@pytest.mark.slow
def test_cli_mvcr_sigterm_at_a_random_step_then_resume_gives_identical_metrics(tmp_path):
    """Frozen cache on (window 3, 4 of 4): the AE-only epoch 1 and the joint epoch 2, 30 steps each."""
    write_toy_csv(tmp_path / "train.csv", 120, 0)
    write_toy_csv(tmp_path / "dev.csv", 40, 1)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = lambda run_dir: [*(part for part in cli(run_dir, tmp_path) if not part.startswith("train.cache_frozen")),
                               "train.cache_frozen=memory", "regularizer=mvcr", "regularizer.dims=[8,16]",
                               "regularizer.warmup_epochs=1"]
    reference = subprocess.run(command(tmp_path / "ref"), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-2000:]
    kill_at = random.Random().randint(3, 55)
    assert sigterm_at_step(command(tmp_path / "run"), kill_at, env) == 143, f"killed at step {kill_at}"
    assert "regularizer" in torch.load(tmp_path / "run" / "checkpoint" / "last.pt", weights_only=False)
    resumed = subprocess.run(command(tmp_path / "run"), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ours = json.loads((tmp_path / "run" / "metrics.json").read_text())
    theirs = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    assert ours["resumed_from"] is not None and theirs["history"][0]["phase"] == "ae_only"
    assert comparable(ours) == comparable(theirs), f"killed at step {kill_at}"


@pytest.mark.parametrize("select,layers", [("manual", [1, 3]), ("all", [0, 2, 4])])  # manual: window 2, 3 of 4, layer 4 removed
@pytest.mark.parametrize("method,arch", [("full", "distilbert"), ("lora", "deberta-v2"), ("prefix", "mpnet")])
def test_mvcr_on_the_lowest_allowed_layer_with_the_other_selections(select, layers, method, arch):
    model = build(arch, select, method)
    hooks = hook_count(model)
    cfg = TrainConfig(lr=1e-2, epochs=2, batch_size=8, precision="fp32")
    result = train(model, toy_data(16, 0), {"dev": toy_data(8, 1)}, TASK, cfg, seed=0, pad_token_id=0, progress=False,
                   regularizer=RegularizerConfig(name="mvcr", dims=[8], layers=layers, warmup_epochs=0))
    assert result.regularizer["layers"] == layers
    assert all(f"mvcr/recon_layer_{layer}" in record for layer in layers for record in result.history)
    assert hook_count(model) == hooks
