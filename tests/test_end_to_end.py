"""The full command on real GLUE files with the real default model, logged to an offline W&B
run that is read back with W&B's own CLI (no mocks)."""

import json
import re
import os
import subprocess
import sys

import pytest

from conftest import REPO

WANDB = os.path.join(os.path.dirname(sys.executable), "wandb")


def hsv(run_dir, *overrides, env=None):
    command = [sys.executable, "-m", "hsv_exp", f"hydra.run.dir={run_dir}", *overrides]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_rte_minilm_end_to_end_with_offline_wandb(tmp_path, glue_dir):
    run_dir = tmp_path / "run"
    done = hsv(run_dir, "task=rte", "tuning=full", "select=variability", "select.k=1", f"task.glue_dir={glue_dir}",
               "task.max_train_examples=48", "task.max_eval_examples=48", "train.epochs=1", "logger=wandb",
               "study=e2e", env={"WANDB_MODE": "offline"})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    for expected in ("variability per layer", "layer  6", "selection variability: head on layer", "dev accuracy: best",
                     "training FLOPs", "inference FLOPs saving"):
        assert expected in output
    scan = json.loads((run_dir / "variability.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert scan["layers"] == list(range(7)) and scan["num_examples"] == 48
    assert metrics["status"] == "complete" and metrics["model"] == "minilm"
    head = min(range(1, 7), key=lambda layer: scan["scores"][layer])
    assert metrics["head_layer"] == head and metrics["tuned_layers"] == [head]
    assert 0.0 <= metrics["best"]["dev/accuracy"] <= 1.0
    assert metrics["compute"]["train_flops_fraction"] < 1.0

    inspect = subprocess.run([WANDB, "leet", "inspect", "--summary", "--json", str(run_dir / "wandb")],
                             capture_output=True, text=True, timeout=120)
    assert inspect.returncode == 0, inspect.stderr
    record = json.loads(inspect.stdout)
    assert record["state"] == "finished"
    assert record["config"]["task"]["name"] == "rte"
    summary = record["summary"]
    assert summary["head_layer"] == head
    assert summary["best/dev/accuracy"] == pytest.approx(metrics["best"]["dev/accuracy"])
    assert summary["compute/train_flops_saving_pct"] == pytest.approx(metrics["compute"]["train_flops_saving_pct"])
    assert summary["variability/layer_03"] == pytest.approx(scan["scores"][3])
    assert record["name"] == "rte-minilm-full-variability-k1-s0"
    assert "WANDB_API_KEY" not in inspect.stdout


@pytest.mark.slow
def test_scan_stage_only_writes_the_scan(tmp_path, glue_dir):
    run_dir = tmp_path / "scan"
    common = ("stage=scan", "task=stsb", "model=tiny", "logger=none", f"task.glue_dir={glue_dir}", "scan.max_examples=200")
    done = hsv(run_dir, *common)
    assert done.returncode == 0, done.stderr[-3000:]
    scan = json.loads((run_dir / "variability.json").read_text())
    assert len(scan["scores"]) == 5  # tiny model: embeddings + 4 layers
    assert set(scan["class_counts"]) <= {"0", "1", "2", "3", "4", "5"}  # STS-B scores binned by round(score)
    assert not (run_dir / "metrics.json").exists()

    # A scan-only run is complete once its variability.json is written: the dry run says so, and
    # the same command again skips it (the file is not rewritten).
    written = (run_dir / "variability.json").stat().st_mtime_ns
    dry = hsv(run_dir, *common, "dry_run=true")
    assert dry.returncode == 0 and dry.stdout.splitlines()[-1].startswith("dry run: 1 job: 1 complete"), dry.stdout + dry.stderr
    again = hsv(run_dir, *common)
    assert again.returncode == 0 and "run already complete" in again.stdout + again.stderr, again.stderr[-3000:]
    assert (run_dir / "variability.json").stat().st_mtime_ns == written
    # Another scan config in that dir is refused, in one line, before it overwrites the scan.
    other = hsv(run_dir, *common[:-1], "scan.max_examples=100")
    assert other.returncode == 2 and other.stderr.strip().splitlines() == [
        f"error: {run_dir} holds a scan of a run with a different config; use another hydra.run.dir or delete it"], other.stderr
    assert (run_dir / "variability.json").stat().st_mtime_ns == written


def test_head_init_from_the_command_line(tmp_path, glue_dir):
    """head_init=ehft through the pipeline: both stages in metrics.json's history and compute, the
    precision that was chosen recorded, and a relaunch finds the run complete."""
    run_dir = tmp_path / "ehft"
    overrides = ("model=tiny", "experiment=smoke", "head_init=ehft", "train.epochs=3", "logger=none", "select=top",
                 "select.k=2", f"task.glue_dir={glue_dir}")
    done = hsv(run_dir, *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [(record["stage"], record["epoch"]) for record in metrics["history"]] == [("head_init", 1), ("train", 1), ("train", 2)]
    compute = metrics["compute"]
    assert compute["train_flops_total"] == pytest.approx(compute["head_init_train_flops"] + compute["stage2_train_flops"])
    assert compute["head_init_train_flops"] > 0
    # Per token, as for every run: the mean of 1 stage-1 and 2 fine-tuning epochs against full fine-tuning.
    stage1 = metrics["head_init"]["stage1_compute"]["train_flops_per_token"]
    mean = (stage1 + 2 * compute["stage2_train_flops_per_token"]) / 3
    assert compute["train_flops_fraction"] == pytest.approx(mean / compute["full_ft_train_flops_per_token"])
    assert compute["train_flops_fraction"] < compute["stage2_train_flops_fraction"]  # BitFit on the window is cheaper
    assert compute["train_time_s"] == pytest.approx(compute["head_init_train_time_s"] + compute["stage2_train_time_s"])
    assert metrics["head_init"]["epochs"] == 1 and metrics["head_init"]["settings"]["method"] == "bitfit"
    assert compute["precision"]["requested"] == "auto" and compute["precision"]["dtype"] in ("fp32", "bf16")
    assert (run_dir / "head_init" / "head_init.pt").is_file() and not (run_dir / "checkpoint").exists()
    # The run log has a line per epoch of both stages, with W&B off as here
    epochs = re.findall(r"epoch (\d+): train/loss [\d.]+, dev/accuracy [\d.]+, \d+ s", (run_dir / "hsv_exp.log").read_text())
    assert epochs == ["1", "1", "2"]
    again = hsv(run_dir, *overrides)
    assert again.returncode == 0 and "already complete" in again.stdout + again.stderr


@pytest.mark.slow
def test_run_in_child_runs_once_and_reports_what_did_not_complete(tmp_path, glue_dir):
    """The helper the scripts of many runs share (head_recipe, precision_scores): a finished run dir is
    read back, not run again; a run that fails gives None."""
    from hsv_exp.cli import run_in_child

    overrides = ["task=rte", "model=tiny", "tuning=full", "select=top", "select.k=1", f"task.glue_dir={glue_dir}",
                 "task.max_train_examples=32", "task.max_eval_examples=32", "train.epochs=1", "logger=none"]
    metrics = run_in_child(overrides, tmp_path / "run")
    assert metrics is not None and metrics["status"] == "complete" and metrics["task"] == "rte"
    written = (tmp_path / "run" / "metrics.json").stat().st_mtime_ns
    assert run_in_child(overrides, tmp_path / "run") == metrics
    assert (tmp_path / "run" / "metrics.json").stat().st_mtime_ns == written  # not run again
    invalid = [override if override != "train.epochs=1" else "train.epochs=0" for override in overrides]
    assert run_in_child(invalid, tmp_path / "bad") is None
