"""hsv_exp.results over fake run dirs written in the exact formats the runs write."""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from hsv_exp.errors import DataError
from hsv_exp.results.__main__ import main
from hsv_exp.config import EXECUTION, NOT_SEMANTIC, keys_marked
from hsv_exp.results.runs import Condition, Run, condition_notes, find_runs, head_layer_of
from hsv_exp.run_dir import STAGE1_DIR
from hsv_exp.results.study import aggregate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[1]

# ν(0..6) of the full scans: argmin over layers 1..6 is layer 4 for RTE, 3 for MRPC.
RTE_SCORES = [12.1, 8.0, 5.2, 3.1, 2.9, 3.3, 4.0]
MRPC_SCORES = [9.0, 6.0, 4.0, 2.5, 2.8, 3.0, 3.6]
FULL_FT_PARAMS = 22713216


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _hydra(run_dir: Path, stage: str) -> None:
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text(f"model:\n  name: minilm\nstage: {stage}\nseed: 0\n")


def _scan(task: str, scores: list[float], seed: int = 0, max_examples=None, majority_fraction=None) -> dict:
    return {"task": task, "model": "minilm", "metric": "variability", "pooling": "mean",
            "layers": list(range(len(scores))), "scores": scores, "num_examples": 2490,
            "class_counts": {"entailment": 1241, "not_entailment": 1249}, "scan_seed_note": "extra keys are kept",
            "scan_seconds": 12.3, "max_examples": max_examples, "majority_fraction": majority_fraction, "seed": seed}


def _metrics(task, tuning, select, k, seed, best, last, *, dev_prefix="dev", main_metric="accuracy",
             extra_dev=None, head_layer=4, train_fraction=0.44, train_time=31.5, trainable=3548930, **top) -> dict:
    main_key = f"{dev_prefix}/{main_metric}"
    extra_dev = extra_dev or {}
    tuned = list(range(1, 7)) if select == "all" else list(range(head_layer - k + 1, head_layer + 1))
    config = {"task": {"name": task, "main_metric": main_metric}, "model": {"name": "minilm"},
              "select": {"name": select, "k": k, "rule": "argmin", "tolerance": 0.05},
              "scan": {"max_examples": None, "majority_fraction": None, "seed": 0},
              "tuning": {"name": tuning}, "train": {"lr": 2e-5, "device": "cpu"}, "seed": seed}
    return {"status": "complete", "task": task, "model": "minilm", "tuning": tuning, "select": select,
            "rule": "argmin", "k": k, "seed": seed, "metric": "variability", "pooling": "mean",
            "head_layer": head_layer, "tuned_layers": tuned, "num_layers": 6, "main_metric": main_metric,
            "best": {"epoch": 2, main_key: best, **extra_dev}, "last": {"epoch": 3, main_key: last, **extra_dev},
            "history": [{"epoch": 1, "train/loss": 0.69, main_key: best - 0.05, "epoch_time_s": 10.2}],
            "compute": {"total_params": FULL_FT_PARAMS, "trainable_params": trainable, "layers_kept": head_layer,
                        "layers_tuned": len(tuned), "train_flops_per_token": 1.2e8,
                        "full_ft_train_flops_per_token": 2.7e8, "train_flops_fraction": train_fraction,
                        "train_flops_saving_pct": 100 * (1 - train_fraction), "inference_flops_fraction": 0.67,
                        "inference_flops_saving_pct": 33.0, "train_time_s": train_time, "peak_memory_mb": 900.0},
            "config": config, **top}


# The numbers the summary must reproduce: condition -> per-seed (best, last).
RTE_VARIABILITY = {0: (0.61, 0.60), 1: (0.64, 0.62), 2: (0.58, 0.59)}
RTE_ALL = {0: (0.66, 0.65), 1: (0.68, 0.64)}
RTE_LORA = {0: (0.57, 0.55)}
MRPC_F1 = {0: (0.88, 0.87), 1: (0.85, 0.86)}
MNLI = {0: (0.81, 0.80), 1: (0.82, 0.82)}
FAILED_ERROR = "CUDA out of memory. Tried to allocate 2.00 GiB"


@pytest.fixture()
def runs_root(tmp_path: Path) -> Path:
    root = tmp_path / "multirun"
    for seed, (best, last) in RTE_VARIABILITY.items():
        run = root / "rte_var" / str(seed)
        _hydra(run, "all")
        _write(run / "metrics.json", _metrics("rte", "full", "variability", 2, seed, best, last, train_time=30.0 + seed))
        _write(run / "variability.json", _scan("rte", RTE_SCORES))  # the same scan copied into each seed's dir
    for seed, (best, last) in RTE_ALL.items():
        _write(root / "rte_all" / str(seed) / "metrics.json", _metrics(
            "rte", "full", "all", 2, seed, best, last, head_layer=6, train_fraction=1.0, trainable=FULL_FT_PARAMS))
    for seed, (best, last) in RTE_LORA.items():
        _write(root / "rte_lora" / str(seed) / "metrics.json", _metrics("rte", "lora", "variability", 1, seed, best, last))
    for seed, (best, last) in MRPC_F1.items():
        _write(root / "mrpc" / str(seed) / "metrics.json", _metrics(
            "mrpc", "full", "variability", 2, seed, best, last, main_metric="f1", head_layer=3,
            extra_dev={"dev/accuracy": 0.8 + seed / 100}))
        _write(root / "mrpc" / str(seed) / "variability.json", _scan("mrpc", MRPC_SCORES))
    for seed, (best, last) in MNLI.items():
        _write(root / "mnli" / str(seed) / "metrics.json", _metrics(
            "mnli", "full", "top", 2, seed, best, last, dev_prefix="dev_matched", head_layer=6,
            extra_dev={"dev_mismatched/accuracy": 0.79}, optimized_metric="dev_matched/accuracy"))
    failed = root / "rte_failed" / "0"
    _hydra(failed, "all")
    _write(failed / "failed.json", {"status": "failed", "error": FAILED_ERROR, "task": "rte", "model": "minilm",
                                    "tuning": "prefix", "select": "variability", "k": 2, "seed": 0, "config": {}})
    scan_only = root / "sst2_scan" / "0"
    _hydra(scan_only, "scan")
    _write(scan_only / "variability.json", _scan("sst2", [5.0, 4.0, 3.0, 2.0, 2.5, 2.7, 3.0]))
    incomplete = root / "rte_incomplete" / "0"
    _hydra(incomplete, "all")
    (incomplete / "checkpoint").mkdir()
    _write(incomplete / "variability.json", _scan("rte", RTE_SCORES))
    # Robustness study: RTE scanned on 100-example, 90/10 subsamples (scan-only, no .hydra).
    for seed, shift in ((0, 0.0), (1, 0.5)):
        _write(root / "robust" / f"n100_{seed}" / "variability.json",
               _scan("rte", [12.0, 7.5, 5.0, 2.8 + shift, 3.0, 3.2, 4.1], seed=seed, max_examples=100, majority_fraction=0.9))
    return root


def _table_rows(summary: str, task: str) -> list[list[str]]:
    section = summary.split(f"## {task}\n", 1)[1].split("\n## ", 1)[0]
    return [[cell.strip() for cell in line.strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| ") and not line.startswith("| model")]


def _row(rows: list[list[str]], model: str, tuning: str, select: str, rule: str, k: str) -> list[str]:
    [row] = [r for r in rows if r[:5] == [model, tuning, select, rule, k]]
    return row


def _expected(pairs: dict[int, tuple[float, float]], which: int) -> str:
    values = [100 * pair[which] for pair in pairs.values()]
    std = f"{statistics.stdev(values):.2f}" if len(values) > 1 else "—"
    return f"{sum(values) / len(values):.2f} ± {std}"


def test_csv_has_one_row_per_run(runs_root: Path, tmp_path: Path) -> None:
    runs, written = aggregate([runs_root], tmp_path / "study")
    with open(tmp_path / "study" / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    statuses = sorted(row["status"] for row in rows)
    assert statuses == sorted(["complete"] * 10 + ["failed", "scan-only", "incomplete", "scan-only", "scan-only"])
    mrpc = [row for row in rows if row["task"] == "mrpc"]
    assert {row["main_metric"] for row in mrpc} == {"dev/f1"}
    assert sorted(float(row["best_main"]) for row in mrpc) == [0.85, 0.88]
    assert sorted(float(row["best/dev/accuracy"]) for row in mrpc) == [0.8, 0.81]
    assert {row["scan_head_layer"] for row in mrpc} == {"3"}
    mnli = [row for row in rows if row["task"] == "mnli"]
    assert {row["main_metric"] for row in mnli} == {"dev_matched/accuracy"}
    assert {row["last/dev_mismatched/accuracy"] for row in mnli} == {"0.79"}
    var0 = next(row for row in rows if row["run_dir"].endswith(os.path.join("rte_var", "0")))
    assert (var0["tuned_layers"], var0["head_layer"], var0["compute/trainable_params"]) == ("3 4", "4", "3548930")
    assert (var0["best_epoch"], var0["last_epoch"], var0["best_main"], var0["last_main"]) == ("2", "3", "0.61", "0.6")
    failed = next(row for row in rows if row["status"] == "failed")
    assert (failed["error"], failed["tuning"], failed["best_main"]) == (FAILED_ERROR, "prefix", "")
    scan_only = next(row for row in rows if row["status"] == "scan-only" and row["task"] == "sst2")
    assert (scan_only["model"], scan_only["scan_head_layer"], scan_only["tuning"]) == ("minilm", "3", "")
    assert next(row for row in rows if row["status"] == "incomplete")["task"] == "rte"
    assert {p.name for p in written} == {"runs.csv", "headline.md", "summary.md", "variability.png", "score_vs_compute.png",
                                         "robustness.md", "robustness.png"}


def test_summary_mean_std_and_failed_runs(runs_root: Path, tmp_path: Path) -> None:
    aggregate([runs_root], tmp_path / "study")
    summary = (tmp_path / "study" / "summary.md").read_text()

    rte = _table_rows(summary, "rte")
    var = _row(rte, "minilm", "full", "variability", "argmin", "2")
    assert var[5:10] == ["4", "3", "0", _expected(RTE_VARIABILITY, 0), _expected(RTE_VARIABILITY, 1)]
    assert var[10:] == ["3,548,930", "44.0%", "67.0%", "31.0"]  # train time: mean of 30, 31, 32
    full = _row(rte, "minilm", "full", "all", "—", "—")
    assert full[5:11] == ["6", "2", "0", _expected(RTE_ALL, 0), _expected(RTE_ALL, 1), f"{FULL_FT_PARAMS:,}"]
    assert full[11] == "100.0%"
    lora = _row(rte, "minilm", "lora", "variability", "argmin", "1")
    assert lora[6:10] == ["1", "0", "57.00 ± —", "55.00 ± —"]
    mrpc = _row(_table_rows(summary, "mrpc"), "minilm", "full", "variability", "argmin", "2")
    assert mrpc[8] == _expected(MRPC_F1, 0)
    mnli = _row(_table_rows(summary, "mnli"), "minilm", "full", "top", "—", "2")
    assert mnli[8] == _expected(MNLI, 0)
    assert "`dev_matched/accuracy`" in summary

    # RTE_SCORES: min 2.9 at layer 4; layer 3 (3.1) is within 10% of it but not within 5%.
    assert ("scan minilm (variability, mean pooling; all examples, natural classes): ℓ* = 4 of L = 6 by argmin; "
            "by the tolerance rule 4 within 5%, 3 within 10% of the minimum (1 scan)") in summary
    failed_section = summary.split("## Failed runs\n", 1)[1].split("\n## ", 1)[0]
    assert "rte_failed" in failed_section and FAILED_ERROR in failed_section and "tuning=prefix" in failed_section
    assert "rte_incomplete" in summary.split("## Incomplete runs\n", 1)[1]


def test_figures_and_robustness(runs_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    aggregate([runs_root], out)
    for name in ("variability.png", "score_vs_compute.png", "robustness.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name
    robustness = (out / "robustness.md").read_text()
    assert "## rte" in robustness and "## mrpc" not in robustness
    # per-scan l*: seed 0 keeps layer 3 (2.8 < 3.0), seed 1 moves to layer 4 (3.3 > 3.0); mean 3.05 > 3.0 -> 4.
    assert "| minilm | variability (mean) | 100 | 0.9 | 2 | 3, 4 | 4 |" in robustness
    assert "| minilm | variability (mean) | — | — | 1 | 4 | 4 |" in robustness
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_stale_robustness_files_are_removed(runs_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    aggregate([runs_root], out)
    aggregate([runs_root / "mrpc"], out)
    assert not (out / "robustness.md").exists() and not (out / "robustness.png").exists()
    assert (out / "variability.png").exists() and "## rte" not in (out / "summary.md").read_text()


def test_cli_subprocess(runs_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "results" / "study"
    result = subprocess.run([sys.executable, "-m", "hsv_exp.results", str(runs_root), "--out", str(out)],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "10 complete, 1 failed, 3 scan-only, 1 incomplete" in result.stdout
    assert (out / "summary.md").exists() and (out / "runs.csv").exists()


def test_a_run_stopped_in_its_head_init_stage_is_one_incomplete_run(tmp_path: Path) -> None:
    # EH-FT's stage 1 trains in <run_dir>/head_init with its own checkpoint; that dir is not a run
    run_dir = tmp_path / "lowres" / "+strategy=ehft,seed=1,task=mrpc"
    _hydra(run_dir, "all")
    (run_dir / STAGE1_DIR / "checkpoint").mkdir(parents=True)
    done = tmp_path / "lowres" / "+strategy=ehft,seed=0,task=mrpc"
    _write(done / "metrics.json", _metrics("mrpc", "full", "all", None, 0, 0.8, 0.8))
    (done / STAGE1_DIR).mkdir()
    (done / STAGE1_DIR / "head_init.pt").write_bytes(b"")
    runs = find_runs([tmp_path / "lowres"])
    assert [(run.run_dir, run.status) for run in runs] == [(done, "complete"), (run_dir, "incomplete")]


def test_cli_no_runs(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    result = subprocess.run([sys.executable, "-m", "hsv_exp.results", str(tmp_path / "empty"), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "no run dirs found" in result.stderr
    assert not (tmp_path / "o").exists()


def test_malformed_json_names_the_file(runs_root: Path, tmp_path: Path, capsys) -> None:
    broken = runs_root / "mrpc" / "1" / "metrics.json"
    broken.write_text('{"status": "complete", "task": ')
    with pytest.raises(DataError, match=str(broken)):
        aggregate([runs_root], tmp_path / "study")
    assert main([str(runs_root), "--out", str(tmp_path / "study")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(broken) in err and "malformed JSON" in err


def test_missing_main_metric_is_malformed(tmp_path: Path) -> None:
    metrics = _metrics("rte", "full", "top", 2, 0, 0.6, 0.6)
    del metrics["best"]["dev/accuracy"]
    _write(tmp_path / "runs" / "0" / "metrics.json", metrics)
    with pytest.raises(DataError, match="no number under the main metric 'dev/accuracy'"):
        aggregate([tmp_path / "runs"], tmp_path / "study")


def test_mixed_configs_in_one_condition_are_flagged(tmp_path: Path) -> None:
    for seed, lr in ((0, 2e-5), (1, 3e-5)):
        metrics = _metrics("rte", "full", "top", 2, seed, 0.6, 0.6)
        metrics["config"]["train"]["lr"] = lr
        metrics["config"]["train"]["device"] = "cuda" if seed else "cpu"  # ignored: does not change results
        _write(tmp_path / "runs" / str(seed) / "metrics.json", metrics)
    aggregate([tmp_path / "runs"], tmp_path / "study")
    summary = (tmp_path / "study" / "summary.md").read_text()
    assert "pools runs whose config differs in train.lr" in summary and "train.device" not in summary


def _pair_differing_in(key: str) -> Condition:
    """Two seeds of one condition whose configs differ only in the dotted `key` (and the seed)."""
    condition = Condition("rte", "minilm", "full", "top", "—", "2")
    for seed, value in ((0, "a"), (1, "b")):
        metrics = _metrics("rte", "full", "top", 2, seed, 0.6, 0.6)
        *parents, leaf = key.split(".")
        node = metrics["config"]
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
        condition.runs.append(Run(Path(str(seed)), "complete", metrics, None))
    return condition


@pytest.mark.parametrize("key", keys_marked(NOT_SEMANTIC) + keys_marked(EXECUTION))
def test_runs_differing_in_a_non_semantic_or_execution_key_pool_without_a_note(key: str) -> None:
    assert condition_notes(_pair_differing_in(key)) == []


@pytest.mark.parametrize("key", ["train.lr", "task.max_train_examples", "scan.full_split", "select.tolerance"])
def test_runs_differing_in_a_real_key_get_the_note(key: str) -> None:
    assert condition_notes(_pair_differing_in(key)) == [f"pools runs whose config differs in {key}"]


def test_head_layer_ignores_embeddings() -> None:
    assert head_layer_of([0, 1, 2, 3], [0.1, 5.0, 2.0, 2.0]) == 2
    assert head_layer_of([0, 1, 2, 3], [0.1, 5.0, 2.0, 2.05], "tolerance", 0.05) == 2
    assert head_layer_of([0, 1, 2, 3], [0.1, 2.1, 2.2, 2.0], "tolerance", 0.05) == 1


def test_scan_layers_must_be_0_to_L(tmp_path: Path) -> None:
    scan = _scan("rte", RTE_SCORES)
    scan["layers"] = [1, 2, 3, 4, 5, 6, 7]
    _write(tmp_path / "runs" / "0" / "variability.json", scan)
    with pytest.raises(DataError, match="'layers' must be 0..L"):
        aggregate([tmp_path / "runs"], tmp_path / "study")


def test_claims_pair_seeds_and_mark_equal_layers(tmp_path: Path) -> None:
    root = tmp_path / "multirun"
    var = {0: 0.70, 1: 0.66, 2: 0.71}
    top = {0: 0.65, 1: 0.67, 2: 0.68}
    whole = {0: 0.72, 1: 0.70}
    for seed in range(3):
        _write(root / f"var{seed}" / "metrics.json", _metrics("rte", "full", "variability", 2, seed, var[seed], var[seed],
                                                               head_layer=4, train_fraction=0.3))
        _write(root / f"var{seed}" / "variability.json", _scan("rte", RTE_SCORES))
        _write(root / f"top{seed}" / "metrics.json", _metrics("rte", "full", "top", 2, seed, top[seed], top[seed],
                                                               head_layer=6, train_fraction=0.35))
        # adapters: variability picked the top layers -> a reused copy of the top run
        _write(root / f"avar{seed}" / "metrics.json", _metrics("rte", "adapter", "variability", 2, seed, 0.6, 0.6,
                                                                head_layer=6, reused_from=f"atop{seed}"))
        _write(root / f"atop{seed}" / "metrics.json", _metrics("rte", "adapter", "top", 2, seed, 0.6, 0.6, head_layer=6))
        # tolerance rule: head 3, a row of its own beside argmin
        _write(root / f"tol{seed}" / "metrics.json", _metrics("rte", "full", "variability", 2, seed, 0.6, 0.6,
                                                               head_layer=3, rule="tolerance"))
    for seed, score in whole.items():
        _write(root / f"all{seed}" / "metrics.json", _metrics("rte", "full", "all", 2, seed, score, score, head_layer=6,
                                                               train_fraction=1.0, num_train_examples=500))
    notes = tmp_path / "notes.md"
    notes.write_text("## Findings\n\nHand-written.\n")
    aggregate([root], tmp_path / "out", notes=notes)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "## Findings\n\nHand-written." in summary and "--notes" in summary
    claim1 = summary.split("### Claim 1", 1)[1].split("###", 1)[0]
    deltas = [100 * (var[s] - top[s]) for s in range(3)]
    expected = f"{statistics.fmean(deltas):+.2f} ± {statistics.stdev(deltas):.2f}"
    assert f"| rte | minilm | full | argmin | 2 | 4 (3,4) | {_expected({s: (var[s], 0) for s in var}, 0)} " in claim1
    assert f"| {expected} | 2/1 | 30.0% / 35.0% |" in claim1
    assert "| rte | minilm | adapter | argmin | 2 | 6 (5,6) = top |" in claim1 and "| +0.00 ± 0.00 | 0/0 |" in claim1
    assert "rte (argmin): mean Δ" in claim1 and "over 1 (tuning, k) cells, var higher in 1" in claim1
    assert "| rte | minilm | full | tolerance 0.05 | 2 | 3 (2,3) |" in claim1
    claim2 = summary.split("### Claim 2", 1)[1].split("###", 1)[0]
    assert "| rte | minilm | full | tolerance 0.05 | 71.00 ± 1.41 | — | 60.00 ± 0.00 | — | -11.00 ± 1.41 (k=2) |" in claim2
    paired = [100 * (var[s] - whole[s]) for s in (0, 1)]  # seed 2 has no whole-model run
    assert f"| {statistics.fmean(paired):+.2f} ± {statistics.stdev(paired):.2f} (k=2) | 30.0% |" in claim2
    adapter_rows = [line for line in _table_rows(summary, "rte") if line[1] == "adapter" and line[2] == "variability"]
    assert adapter_rows[0][7] == "3"  # reused column
    headline = (tmp_path / "out" / "headline.md").read_text()
    full_row = next(line for line in headline.splitlines() if line.startswith("| rte | minilm | full |"))
    # whole model, top k=2, variability k=2 argmin, tolerance; FLOPs of top / argmin / tolerance
    assert full_row.startswith(f"| rte | minilm | full | 3, 4 | 71.00 ± 1.41 | {_expected({s: (top[s], 0) for s in top}, 0)} "
                               f"| {_expected({s: (var[s], 0) for s in var}, 0)} | 60.00 ± 0.00 | 35.0% / 30.0% / 44.0% |")
    claim3 = summary.split("### Claim 3", 1)[1]
    # scan: 12.3 s / 2490 examples; whole-model full FT: 31.5 s for 1 epoch (one history row) of num_train_examples
    # -> 4.9 s per 1k scanned vs 31.5 / 0.5 = 63.0 s per 1k trained per epoch: 12.8x
    assert "| rte | minilm | 2490 | 12.3 | 4.9 | 63.0 | 12.8× | 4 | 4 | 3 |" in claim3
