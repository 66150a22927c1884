"""What a sweep's runs share through its sweep dir: one variability scan per distinct scanned data
set (`<sweep>/scans/`), and the results of a run whose resolved layers, data and seed equal a
completed run's (`<sweep>/equivalent/`). Real multiruns of the tiny model on a small RTE folder."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from test_cli_errors import PYTHON, REPO, make_glue, rte_lines

FAST = ["model=tiny", "logger=none", "train.epochs=1", "train.batch_size=16", "train.max_length=32"]


def multirun(sweep_dir: Path, glue: Path, *overrides: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false",
           "GLUE_DIR": str(glue)}
    result = subprocess.run([PYTHON, "-m", "hsv_exp", "-m", *FAST, f"hydra.sweep.dir={sweep_dir}", *overrides],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "job failed" not in output, output
    return output


def metrics(sweep_dir: Path) -> dict[str, dict]:
    return {path.parent.name: json.loads(path.read_text()) for path in sweep_dir.glob("*/metrics.json")}


@pytest.fixture(scope="module")
def glue(tmp_path_factory) -> Path:
    return make_glue(tmp_path_factory.mktemp("data"), train=rte_lines(48), dev=rte_lines(16))


def test_equivalent_run_reuses_results_and_equals_training_again(glue, tmp_path):
    # The tiny model has 4 layers: manual head 4 with k=2 is exactly top k=2; manual head 3 is not.
    sweep = tmp_path / "sweep"
    output = multirun(sweep, glue, "select=top,manual", "select.head_layer=4,3", "select.k=2")
    runs = {(run["select"], run["config"]["select"]["head_layer"]): (name, run) for name, run in metrics(sweep).items()}
    assert len(runs) == 4
    top_dir, top = runs["top", 4]
    _, same = runs["manual", 4]
    _, other = runs["manual", 3]
    assert "reused_from" not in top and "reused_from" not in other
    assert same["reused_from"] == top_dir
    assert "reusing its results" in output
    assert (same["select"], same["head_layer"], same["tuned_layers"]) == ("manual", 4, [3, 4])
    assert other["head_layer"] == 3 and other["history"] != top["history"]

    # The claim behind reuse: training the equivalent run again gives the same numbers.
    fresh = tmp_path / "fresh"
    multirun(fresh, glue, "select=manual", "select.head_layer=4", "select.k=2", "reuse_equivalent_runs=false")
    (trained,) = metrics(fresh).values()
    assert "reused_from" not in trained
    def untimed(row: dict) -> dict:
        return {key: value for key, value in row.items() if "time" not in key}

    assert untimed(trained["best"]) == untimed(same["best"]) and untimed(trained["last"]) == untimed(same["last"])
    assert [row["train/loss"] for row in trained["history"]] == [row["train/loss"] for row in same["history"]]


def test_scan_runs_once_per_distinct_data_and_full_split_scans_everything(glue, tmp_path):
    sweep = tmp_path / "sweep"
    output = multirun(sweep, glue, "select=variability", "select.k=1,2", "task.max_train_examples=20",
                      "scan.full_split=true,false")
    scans = {path.parent.name: json.loads(path.read_text()) for path in sweep.glob("*/variability.json")}
    full = [scan for name, scan in scans.items() if "scan.full_split=true" in name.lower()]
    sub = [scan for name, scan in scans.items() if "scan.full_split=false" in name.lower()]
    assert len(full) == len(sub) == 2
    assert {scan["num_examples"] for scan in full} == {48} and {scan["num_examples"] for scan in sub} == {20}
    assert full[0]["scores"] == full[1]["scores"] and full[0]["scan_key"] == full[1]["scan_key"]
    assert full[0]["scan_key"] != sub[0]["scan_key"]
    # Two distinct scanned sets -> two scans computed, the other two runs read them from the sweep's cache.
    assert len(list((sweep / "scans").glob("*.json"))) == 2
    assert output.count("variability scan: reusing") == 2
    for name, run in metrics(sweep).items():
        assert run["num_train_examples"] == 20, name  # training uses the subsample either way
