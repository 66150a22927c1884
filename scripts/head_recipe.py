"""The head-recipe experiments of issue 13: short runs of each method under candidate head settings.

Every run is a plain `python -m hsv_exp ... logger=none train.num_threads=1` (the command is kept in
the csv), two at a time; finished runs (metrics.json present) are not run again
(hsv_exp.cli.run_in_child), so the script can be re-run after an interruption or with more
variants. GLUE data: $GLUE_DIR. Results are appended to results/head_recipe/runs_<phase>.csv
(atomically rewritten after every run).

    python scripts/head_recipe.py diagnose   # SST-2 + MRPC, 500 examples, 1 epoch: what holds the head back
    python scripts/head_recipe.py budget     # the five tasks at the study's budget (1,000 examples, 2 epochs, batch 16)
    python scripts/head_recipe.py budget_seeds  # seeds 1, 2 of head_lr=2e-2 on MRPC, RTE, CoLA (against the study's seeds)
    python scripts/head_recipe.py defaults   # the chosen defaults: variability k=1 adapter vs the linear probe, SST-2 + STS-B
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hsv_exp.atomic import write_atomic
from hsv_exp.cli import run_in_child

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "head_recipe"
RUNS = Path(os.environ.get("HEAD_RECIPE_RUNS", "/tmp/head_recipe_runs"))
METHOD_LR = {"adapter": 5e-4, "lora": 5e-4}  # conf/tuning/*.yaml; full: train.lr 5e-5, pinned in command() (the task configs' lr is the whole-split study's)
# HEAD_RECIPE_TASKS=sst2,cola: only these tasks of a phase (two runners on disjoint tasks, each its own csv).
TASKS = os.environ.get("HEAD_RECIPE_TASKS", "")
SUFFIX = f"_{TASKS.replace(',', '_')}" if TASKS else ""
COLUMNS = ["phase", "task", "method", "k", "variant", "examples", "epochs", "batch", "seed", "metric", "score",
           "train_loss", "epoch_scores", "seconds", "command"]

# Candidate changes, as CLI overrides on top of the method's defaults.
DIAGNOSE = {
    "baseline": [],
    "head_lr=5e-3": ["train.head_lr=5e-3"],
    "head_lr=2e-2": ["train.head_lr=2e-2"],
    "warmup=0": ["train.warmup_ratio=0"],
    "dropout=0": ["train.dropout=0"],
    "head_lr=5e-3,warmup=0,dropout=0": ["train.head_lr=5e-3", "train.warmup_ratio=0", "train.dropout=0"],
    "head_lr=2e-2,warmup=0,dropout=0": ["train.head_lr=2e-2", "train.warmup_ratio=0", "train.dropout=0"],
}


def command(task: str, method: str, k: int, examples: int, epochs: int, batch: int | None, seed: int,
            overrides: list[str]) -> list[str]:
    """The run's overrides of `python -m hsv_exp`."""
    select = [o for o in overrides if o.startswith("select=")] or ["select=top"]  # a variant may choose the selection
    overrides = [o for o in overrides if not o.startswith("select=")]
    return [f"task={task}", "model=minilm", f"tuning={method}", *select,
            f"select.k={k}", f"task.max_train_examples={examples}", f"train.epochs={epochs}", "train.lr=5e-5",
            *([f"train.batch_size={batch}"] if batch else []), f"seed={seed}", "train.num_threads=1", "logger=none",
            *overrides]


def run_dir_of(phase, task, method, k, variant, examples, epochs, batch, seed) -> Path:
    name = f"{phase}-{task}-{method}-k{k}-{variant}-n{examples}-e{epochs}-b{batch or None}-s{seed}"
    return RUNS / name.replace("=", "").replace(",", "_")


def dev_metrics(row: dict) -> str:
    """Every dev metric of the run's last epoch (e.g. MRPC's accuracy beside its F1), read from its metrics.json."""
    path = run_dir_of(*(row[key] for key in ("phase", "task", "method", "k", "variant", "examples", "epochs", "batch", "seed")))
    if not (path / "metrics.json").is_file():
        return ""
    last = json.loads((path / "metrics.json").read_text())["history"][-1]
    return " ".join(f"{key[4:]}={value:.4f}" for key, value in last.items() if key.startswith("dev/"))


def run_one(phase: str, task: str, method: str, k: int, variant: str, overrides: list[str], examples: int,
            epochs: int, batch: int | None, seed: int) -> dict:
    run_dir = run_dir_of(phase, task, method, k, variant, examples, epochs, batch, seed)
    argv = command(task, method, k, examples, epochs, batch, seed, overrides)
    metrics = run_in_child(argv, run_dir, timeout=1800)
    shown = "python -m hsv_exp " + " ".join(argv)
    if metrics is None:
        return {"phase": phase, "task": task, "method": method, "k": k, "variant": variant, "score": "failed", "command": shown}
    key = metrics["optimized_metric"]
    history = metrics["history"]
    return {"phase": phase, "task": task, "method": method, "k": k, "variant": variant, "examples": examples,
            "epochs": epochs, "batch": batch or "", "seed": seed, "metric": key, "score": round(history[-1][key], 4),
            "train_loss": " ".join(f"{entry['train/loss']:.4f}" for entry in history if "train/loss" in entry),
            "epoch_scores": " ".join(f"{entry[key]:.4f}" for entry in history),
            "seconds": round(sum(entry["epoch_time_s"] for entry in history), 1), "command": shown}


def save(rows: list[dict]) -> None:
    def write(f):
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    write_atomic(OUT / f"runs_{rows[-1]['phase']}{SUFFIX}.csv", write)


def load(phase: str | None = None) -> list[dict]:
    """The rows of one phase's csv (runs_<phase>.csv), or of all of them."""
    paths = [OUT / f"runs_{phase}{SUFFIX}.csv"] if phase else sorted(OUT.glob("runs_*.csv"))
    return [row for path in paths if path.is_file() for row in csv.DictReader(io.StringIO(path.read_text()))]


def jobs(phase: str) -> list[tuple]:
    if phase == "diagnose":  # the grid as run (trimmed on a contended CPU: warm-up and dropout on SST-2 only)
        grid = {"sst2": list(DIAGNOSE) + ["head_lr=1e-1"], "mrpc": ["baseline", "head_lr=2e-2"]}
        return [(phase, task, method, 1, variant, DIAGNOSE.get(variant, [f"train.{variant}"]), 500, 1, None, 0)
                for task, variants in grid.items() for method in ("adapter", "lora", "full") for variant in variants
                if not (task == "sst2" and method == "full" and variant in ("dropout=0", "head_lr=5e-3,warmup=0,dropout=0",
                                                                            "head_lr=2e-2,warmup=0,dropout=0"))
                and not (task == "sst2" and method == "full" and variant == "head_lr=1e-1")]
    if phase in ("budget", "budget_k2"):
        # The study's own runs are the baseline (results/study_1k/runs.csv, the same settings and seed); only
        # the candidates run here. HEAD_RECIPE_JOBS: JSON list of [task, method, variant, [overrides]].
        k = 1 if phase == "budget" else 2
        return [(phase, task, method, k, variant, overrides, 1000, 2, 16, 0)
                for task, method, variant, overrides in json.loads(os.environ["HEAD_RECIPE_JOBS"])]
    if phase == "budget_seeds":  # seeds 1 and 2 of the candidate on the tasks it did not help at seed 0
        return [(phase, task, method, 1, "head_lr=2e-2", ["train.head_lr=2e-2"], 1000, 2, 16, seed)
                for task in ("mrpc", "rte", "cola") for method in ("adapter", "lora", "full") for seed in (1, 2)]
    if phase == "defaults":  # issue 13's done-when: variability k=1 adapter, 500 examples, 1 epoch, vs the probe
        variants = {"default": ["select=variability"],
                    "head_lr=null,regression_bias=init": ["select=variability", "train.head_lr=null",
                                                                  "train.regression_bias=init"]}
        return [(phase, task, method, k, variant, overrides, 500, 1, None, 0) for task in ("sst2", "stsb")
                for method, k, variant, overrides in
                [("adapter", 1, name, value) for name, value in variants.items()]
                + [("linear_probe", 0, "probe", ["select=variability"])]] + [
            (phase, "stsb", "adapter", 1, "regression_bias=init", ["select=variability", "train.regression_bias=init"],
             500, 1, None, 0)]  # the head lr alone, without the bias init
    raise SystemExit(f"unknown phase {phase}")


def study_baseline(k: int = 1, seed: int = 0) -> dict[tuple[str, str], tuple[float, str]]:
    """results/study_1k/runs.csv (the study's top_k runs at this budget): (task, method) -> (last-epoch main metric, loss)."""
    rows = csv.DictReader(io.StringIO((ROOT / "results" / "study_1k" / "runs.csv").read_text()))
    return {(row["task"], row["tuning"]): (float(row["last_main"]), row["last/train/loss"],
                                           " ".join(f"{key[9:]}={float(value):.4f}" for key, value in row.items()
                                                    if key.startswith("last/dev/") and value))
            for row in rows if row["select"] == "top" and row["k"] == str(k) and row["seed"] == str(seed)}


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]) + "\n"


def summary(rows: list[dict]) -> str:
    """runs.csv (+ head_only.csv, results/study_1k) -> summary.md tables."""
    out = ["# Head recipe (issue 13): measurements\n", "Every number below comes from `results/head_recipe/runs_*.csv` "
           "(its `command` column is the exact command of each run) or the files named.\n"]
    diag = [row for row in rows if row["phase"] == "diagnose" and row["score"] != "failed"]
    if diag:
        out.append("## 1. Short runs: 500 examples, 1 epoch, select=top k=1, seed 0 (task batch size)\n")
        out.append(table(["task", "method", "variant", "dev (last epoch)", "all dev metrics", "train loss"],
                         [[r["task"], r["method"], r["variant"], r["score"], dev_metrics(r), r["train_loss"]] for r in diag]))
    for phase, k in (("budget", 1), ("budget_k2", 2)):
        after = {(r["task"], r["method"], r["variant"]): r for r in rows if r["phase"] == phase and r["score"] != "failed"}
        if not after:
            continue
        before = study_baseline(k)
        out.append(f"## Study budget: 1,000 examples, 2 epochs, batch 16, select=top k={k}, seed 0\n")
        out.append("before = results/study_1k/runs.csv (the study's `top_k%d` run, seed 0, last epoch); "
                   "after = the candidate head settings (runs_budget*.csv).\n" % k)
        out.append(table(["task", "method", "variant", "metric", "before", "after", "change", "before: all dev metrics", "after: all dev metrics",
                          "train loss before (last epoch)", "train loss after (per epoch)"],
                         [[task, method, variant, r["metric"], f"{before[(task, method)][0]:.4f}", r["score"],
                           f"{float(r['score']) - before[(task, method)][0]:+.4f}", before[(task, method)][2], dev_metrics(r), f"{float(before[(task, method)][1]):.4f}",
                           r["train_loss"]] for (task, method, variant), r in sorted(after.items())]))
    defaults = [r for r in rows if r["phase"] == "defaults" and r["score"] != "failed"]
    if defaults:
        out.append("## The chosen defaults: select=variability, 500 examples, 1 epoch, seed 0\n\n"
                   "adapter k=1 with the defaults (train.head_lr=2e-2, train.regression_bias=label_mean), with the "
                   "recipe before them, and the closed-form linear probe (tuning=linear_probe) on the same layer and examples.\n")
        out.append(table(["task", "method", "variant", "dev (last epoch)", "all dev metrics", "train loss"],
                         [[r["task"], r["method"], r["variant"], r["score"], dev_metrics(r), r["train_loss"]] for r in defaults]))
    seeds = [r for r in rows if r["phase"] == "budget_seeds" and r["score"] != "failed"]
    if seeds:
        out.append(seed_table(rows, sorted({(r["task"], r["method"]) for r in seeds})))
    return "\n".join(out)


def seed_table(rows: list[dict], cells: list[tuple[str, str]]) -> str:
    """Three seeds of head_lr=2e-2 (seed 0 from `budget`, 1-2 from `budget_seeds`) against the study's three."""
    after = {(r["task"], r["method"], int(r["seed"] or 0)): float(r["score"]) for r in rows
             if r["phase"] in ("budget", "budget_seeds") and r["variant"] == "head_lr=2e-2" and r["score"] != "failed"}
    before = {seed: study_baseline(1, seed) for seed in (0, 1, 2)}
    lines = []
    for task, method in cells:
        old = [before[seed][(task, method)][0] for seed in (0, 1, 2)]
        new = [after[(task, method, seed)] for seed in (0, 1, 2) if (task, method, seed) in after]
        mean = lambda values: sum(values) / len(values)
        lines.append([task, method, " ".join(f"{v:.4f}" for v in old), f"{mean(old):.4f}",
                      " ".join(f"{v:.4f}" for v in new), f"{mean(new):.4f}", f"{mean(new) - mean(old):+.4f}"])
    return ("## Study budget, seeds 0-2: the study's runs (head at the method's lr) vs head_lr=2e-2\n\n"
            "Same settings as above (select=top k=1, 1,000 examples, 2 epochs, batch 16); main metric, last epoch.\n\n"
            + table(["task", "method", "before (seeds 0 1 2)", "mean", "head_lr=2e-2 (seeds 0 1 2)", "mean", "change"], lines))


def main() -> None:
    phase = sys.argv[1]
    if phase == "summary":
        write_atomic(OUT / "summary.md", lambda f: f.write(summary(load())))
        return
    rows = load(phase)
    done = {(row["phase"], row["task"], row["method"], str(row["k"]), row["variant"], str(row.get("seed", 0)))
            for row in rows if row["score"] != "failed"}
    todo = [job for job in jobs(phase) if (job[0], job[1], job[2], str(job[3]), job[4], str(job[9])) not in done
            and (not TASKS or job[1] in TASKS.split(","))]
    with ThreadPoolExecutor(max_workers=int(os.environ.get("HEAD_RECIPE_WORKERS", "2"))) as pool:
        for row in pool.map(lambda job: run_one(*job), todo):
            rows.append(row)
            save(rows)
            print(row["task"], row["method"], row["k"], row["variant"], row["score"], row.get("train_loss"), flush=True)


if __name__ == "__main__":
    main()
