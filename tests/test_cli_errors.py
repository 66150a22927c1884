"""`python -m hsv_exp ...` as a user runs it: each bad input ends in one `error: ...` line, a non-zero
exit and no metrics.json; a good run completes once and is skipped when launched again.

Every case is a real subprocess, run from the repo root with `hydra.run.dir` in tmp_path. A launch
is mostly ~6 s of imports, so the cases are few, their data tiny (a 40-example RTE-layout folder,
the tiny random model, no logger), and the `runs` fixture starts them all up front, a few at a
time; each test then checks its own case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
PYTHON = str(PYTHON) if PYTHON.is_file() else sys.executable
HEADER = "index\tsentence1\tsentence2\tlabel"
FAST = ["train.epochs=1", "train.batch_size=16", "train.max_length=32"]


def rte_lines(n: int, label=lambda i: "entailment" if i % 2 else "not_entailment") -> list[str]:
    return [f'{i}\tThe "premise" number {i} says a thing.\tHypothesis {i}.\t{label(i)}' for i in range(n)]


def make_glue(root: Path, train: list[str] | None = None, dev: list[str] | None = None) -> Path:
    """An RTE folder in the download script's layout; 40 train / 16 dev balanced examples by default."""
    folder = root / "glue" / "RTE"
    folder.mkdir(parents=True)
    for name, lines in (("train", rte_lines(40) if train is None else train), ("dev", rte_lines(16) if dev is None else dev)):
        (folder / f"{name}.tsv").write_text("\n".join([HEADER, *lines]) + "\n")
    return folder.parent


def hsv(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("GLUE_DIR", None)  # only the data each case names
    started = time.perf_counter()
    result = subprocess.run([PYTHON, "-m", "hsv_exp", "model=tiny", "logger=none", f"hydra.run.dir={run_dir}", *overrides],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    result.seconds = time.perf_counter() - started
    result.output = result.stdout + result.stderr
    metrics = run_dir / "metrics.json"
    result.metrics_mtime = metrics.stat().st_mtime_ns if metrics.exists() else None  # to tell a rewrite
    return result


# ---------------------------------------------------------------- the cases
# Each case writes its data under `root` and returns the override lists of its launches (one, or
# several run one after another in the same run dir root/run).
CASES: dict[str, Callable[[Path], list[list[str]]]] = {}


def case(setup: Callable[[Path], list[list[str]]]):
    CASES[setup.__name__] = setup
    return setup


@case
def unknown_task(root):
    return [["task=foo"]]


@case
def unknown_model(root):
    return [["model=foo"]]


@case
def glue_dir_without_the_task(root):
    (root / "empty").mkdir()
    return [[f"task.glue_dir={root / 'empty'}"]]


@case
def malformed_line(root):
    lines = rte_lines(40)
    lines[3] = "3\tA premise and a lost tab.entailment"  # line 5 of the file: 3 columns
    return [[f"task.glue_dir={make_glue(root, train=lines)}"]]


@case
def label_outside_the_task(root):
    lines = rte_lines(40)
    lines[10] = "10\tA premise.\tA hypothesis.\tcontradiction"  # an MNLI label in RTE, line 12
    return [[f"task.glue_dir={make_glue(root, train=lines)}"]]


@case
def empty_split(root):
    return [[f"task.glue_dir={make_glue(root, dev=[])}"]]  # dev.tsv is only its header


@case
def class_without_examples_in_the_scan(root):
    glue = make_glue(root, train=rte_lines(40, label=lambda i: "entailment"))
    return [[f"task.glue_dir={glue}", "select=variability", *FAST]]


@case
def window_larger_than_the_head_layer(root):
    return [[f"task.glue_dir={make_glue(root)}", "select=manual", "select.head_layer=1", "select.k=2", *FAST]]


@case
def mvcr_inside_the_frozen_prefix(root):  # window 4: MVCR may act on layer 3's output (the prefix's), not on layer 1's
    return [[f"task.glue_dir={make_glue(root)}", "select=top", "select.k=1", "regularizer=mvcr", "regularizer.layers=[1]", *FAST]]


@case
def no_local_data_and_no_hub(root):
    return [["task.glue_dir=null"]]


@case
def tiny_run_completes_then_is_skipped(root):
    args = [f"task.glue_dir={make_glue(root)}", "select=variability", "select.k=1", *FAST]
    return [args, args]


@case
def crash_leaves_failed_json_and_no_metrics(root):
    # Not a user error: transformers refuses 32 hidden units over 3 heads while building the model.
    return [[f"task.glue_dir={make_glue(root)}", "model.arch_kwargs.num_attention_heads=3", *FAST]]


# Bad values through the real command line: the schema refuses them before any data or model is
# read (dry_run=true, which would otherwise print the config and exit 0). The rest of the schema's
# checks are in tests/test_config.py (BAD_VALUES).
BAD_VALUE_LINES = {
    "lora_dropout_and_scale_out_of_range": (["tuning=lora", "tuning.lora_dropout=1.5", "tuning.scale=-1"],
                                            "tuning.lora_dropout must be in [0, 1), got 1.5"),
    "negative_scale": (["tuning=scaled_pa", "tuning.scale=-1"], "tuning.scale must be > 0, got -1.0"),
    "zero_learning_rate": (["train.lr=0"], "train.lr must be > 0, got 0.0"),
    "manual_select_without_its_layer": (["select=manual"], "select=manual needs select.head_layer"),
    "fewer_train_examples_than_classes": (["task.max_train_examples=1"],
                                          "task.max_train_examples must be >= the number of classes (2), got 1"),
}
for _name, (_overrides, _line) in BAD_VALUE_LINES.items():
    CASES[_name] = lambda root, overrides=_overrides: [[*overrides, "dry_run=true"]]


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory) -> dict[str, tuple[Path, list[subprocess.CompletedProcess]]]:
    """case name -> (its root, the results of its launches), for the cases whose tests were selected."""
    def case_of(item) -> str:  # a parametrized test names its case in `name`
        params = item.callspec.params if hasattr(item, "callspec") else {}
        return params.get("name", item.function.__name__.removeprefix("test_"))

    selected = {case_of(item) for item in request.session.items if item.module is request.module}

    def launch(name: str):
        root = tmp_path_factory.mktemp(name)
        return name, (root, [hsv(root / "run", *overrides) for overrides in CASES[name](root)])

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 2)) as pool:
        return dict(pool.map(launch, sorted(selected & set(CASES))))


def assert_user_error(result, run_dir: Path, *needles: str) -> str:
    """Exit 2, exactly one `error:` line containing every needle, no traceback, failed.json, no metrics.json."""
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    assert result.returncode == 2, result.output
    assert all(needle in errors[0] for needle in needles), errors[0]
    assert "Traceback" not in result.output
    assert not (run_dir / "metrics.json").exists()
    failure = json.loads((run_dir / "failed.json").read_text())
    assert failure["status"] == "failed" and failure["error"] == errors[0].removeprefix("error: ")
    assert "traceback" not in failure  # a user error is not a crash
    return errors[0]


# ---------------------------------------------------------------- the checks
def check_unknown_option(runs, group, listed):
    root, [result] = runs[f"unknown_{group}"]
    assert result.returncode != 0
    assert f"Could not find '{group}/foo'" in result.stderr and "Available options" in result.stderr
    assert listed in result.stderr
    assert not (root / "run" / "metrics.json").exists()


def test_unknown_task(runs):
    check_unknown_option(runs, "task", "rte")


def test_unknown_model(runs):
    check_unknown_option(runs, "model", "tiny")


def test_glue_dir_without_the_task(runs):
    root, [result] = runs["glue_dir_without_the_task"]
    line = assert_user_error(result, root / "run", str(root / "empty"), "RTE/train.tsv")
    assert "GLUE dir" in line


def test_malformed_line(runs):
    root, [result] = runs["malformed_line"]
    assert_user_error(result, root / "run", f"{root / 'glue' / 'RTE' / 'train.tsv'}:5", "columns")


def test_label_outside_the_task(runs):
    root, [result] = runs["label_outside_the_task"]
    assert_user_error(result, root / "run", f"{root / 'glue' / 'RTE' / 'train.tsv'}:12", "'contradiction'")


def test_empty_split(runs):
    root, [result] = runs["empty_split"]
    assert_user_error(result, root / "run", str(root / "glue" / "RTE" / "dev.tsv"), "no examples")


def test_class_without_examples_in_the_scan(runs):
    root, [result] = runs["class_without_examples_in_the_scan"]
    assert_user_error(result, root / "run", "not_entailment", "no examples")


def test_window_larger_than_the_head_layer(runs):
    root, [result] = runs["window_larger_than_the_head_layer"]
    assert_user_error(result, root / "run", "select.k=2", "head layer 1")


def test_mvcr_inside_the_frozen_prefix(runs):
    root, [result] = runs["mvcr_inside_the_frozen_prefix"]
    assert_user_error(result, root / "run", "regularizer.layers [1] cannot be perturbed", "(4..4)", "(layer 3)")


def test_no_local_data_and_no_hub(runs):
    root, [result] = runs["no_local_data_and_no_hub"]
    assert_user_error(result, root / "run", "GLUE_DIR", "RTE/train.tsv")
    assert result.seconds < 60  # imports only: no network wait


def test_tiny_run_completes_then_is_skipped(runs):
    root, [first, again] = runs["tiny_run_completes_then_is_skipped"]
    run_dir = root / "run"
    assert first.returncode == 0, first.output
    assert "error:" not in first.output and "variability per layer" in first.output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["task"] == "rte" and metrics["model"] == "tiny"
    assert metrics["num_train_examples"] == 40 and metrics["optimized_metric"] == "dev/accuracy"
    for key in ("best", "last"):
        assert 0.0 <= metrics[key]["dev/accuracy"] <= 1.0 and metrics[key]["epoch"] == 1
    assert 1 <= metrics["head_layer"] <= 4 and metrics["tuned_layers"] == [metrics["head_layer"]]
    scan = json.loads((run_dir / "variability.json").read_text())
    assert len(scan["scores"]) == 5 and scan["class_counts"] == {"entailment": 20, "not_entailment": 20}
    assert not (run_dir / "failed.json").exists()

    # The second launch found the complete run: no scan, no training, metrics.json untouched.
    assert again.returncode == 0, again.output
    assert "already complete" in again.output and "variability per layer" not in again.output
    assert again.metrics_mtime == first.metrics_mtime is not None


def test_crash_leaves_failed_json_and_no_metrics(runs):
    root, [result] = runs["crash_leaves_failed_json_and_no_metrics"]
    run_dir = root / "run"
    assert result.returncode not in (0, 2), result.output
    assert not (run_dir / "metrics.json").exists()
    failure = json.loads((run_dir / "failed.json").read_text())
    assert failure["status"] == "failed" and failure["error_type"] == "ValueError"
    assert "attention heads" in failure["error"] and "Traceback" in failure["traceback"]
    assert failure["model"] == "tiny" and failure["config"]["model"]["arch_kwargs"]["num_attention_heads"] == 3


@pytest.mark.parametrize("name", sorted(BAD_VALUE_LINES))
def test_bad_value_fails_at_the_command_line(runs, name):
    root, [result] = runs[name]
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {BAD_VALUE_LINES[name][1]}"], result.output
    assert result.returncode == 2 and "Traceback" not in result.output
    listed = [line for line in result.output.splitlines() if line.startswith("[dry-run] ")]
    assert all(" invalid: " in line for line in listed), result.output  # a dry run lists the job as invalid
    assert not (root / "run").exists()
