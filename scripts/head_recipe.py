"""The head-recipe experiments of issue 13: short runs of each method under candidate head settings.

Every run is a plain `python -m hsv_exp ... logger=none train.num_threads=1` (the command is kept in
the csv), two at a time; finished runs (metrics.json present) are not run again, so the script can
be re-run after an interruption or with more variants. Results are appended to
results/head_recipe/runs.csv (atomically rewritten after every run).

    python scripts/head_recipe.py diagnose   # SST-2 + MRPC, 500 examples, 1 epoch: what holds the head back
    python scripts/head_recipe.py budget     # the five tasks at the study's budget (1,000 examples, 2 epochs, batch 16)
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hsv_exp.atomic import write_atomic

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "head_recipe"
RUNS = Path(os.environ.get("HEAD_RECIPE_RUNS", "/tmp/head_recipe_runs"))
METHOD_LR = {"adapter": 5e-4, "lora": 5e-4}  # conf/tuning/*.yaml; full uses the task's train.lr
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
            overrides: list[str], run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "hsv_exp", f"task={task}", "model=minilm", f"tuning={method}", "select=top",
            f"select.k={k}", f"task.max_train_examples={examples}", f"train.epochs={epochs}",
            *([f"train.batch_size={batch}"] if batch else []), f"seed={seed}", "train.num_threads=1", "logger=none",
            *overrides, f"hydra.run.dir={run_dir}"]


def run_one(phase: str, task: str, method: str, k: int, variant: str, overrides: list[str], examples: int,
            epochs: int, batch: int | None, seed: int) -> dict:
    name = f"{phase}-{task}-{method}-k{k}-{variant}-n{examples}-e{epochs}-b{batch}-s{seed}".replace("=", "").replace(",", "_")
    run_dir = RUNS / name
    argv = command(task, method, k, examples, epochs, batch, seed, overrides, run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
        env.setdefault("GLUE_DIR", "/work/shared/glue")
        subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1800)
    shown = "python -m hsv_exp " + " ".join(argv[3:-1])
    if not metrics_path.is_file():
        return {"phase": phase, "task": task, "method": method, "k": k, "variant": variant, "score": "failed", "command": shown}
    metrics = json.loads(metrics_path.read_text())
    key = metrics["optimized_metric"]
    history = metrics["history"]
    return {"phase": phase, "task": task, "method": method, "k": k, "variant": variant, "examples": examples,
            "epochs": epochs, "batch": batch or "", "seed": seed, "metric": key, "score": round(history[-1][key], 4),
            "train_loss": " ".join(f"{entry['train/loss']:.4f}" for entry in history),
            "epoch_scores": " ".join(f"{entry[key]:.4f}" for entry in history),
            "seconds": round(sum(entry["epoch_time_s"] for entry in history), 1), "command": shown}


def save(rows: list[dict]) -> None:
    def write(f):
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    write_atomic(OUT / "runs.csv", write)


def load() -> list[dict]:
    path = OUT / "runs.csv"
    return list(csv.DictReader(io.StringIO(path.read_text()))) if path.is_file() else []


def jobs(phase: str) -> list[tuple]:
    if phase == "diagnose":
        return [(phase, task, method, 1, variant, overrides, 500, 1, None, 0)
                for task in ("sst2", "mrpc") for method in ("adapter", "lora", "full")
                for variant, overrides in DIAGNOSE.items()]
    if phase == "budget":
        recommended = json.loads(os.environ["HEAD_RECIPE_RECOMMENDED"])  # {method: [overrides]}
        return [(phase, task, method, 1, variant, overrides, 1000, 2, 16, 0)
                for task in ("sst2", "mrpc", "rte", "cola", "stsb") for method in ("adapter", "lora", "full")
                for variant, overrides in (("baseline", []), ("recommended", recommended[method]))]
    if phase == "budget_k2":
        recommended = json.loads(os.environ["HEAD_RECIPE_RECOMMENDED"])
        return [(phase, task, method, 2, variant, overrides, 1000, 2, 16, 0)
                for task in ("sst2", "cola", "mrpc", "rte", "stsb") for method in ("adapter", "lora", "full")
                for variant, overrides in (("baseline", []), ("recommended", recommended[method]))]
    raise SystemExit(f"unknown phase {phase}")


def main() -> None:
    phase = sys.argv[1]
    rows = load()
    done = {(row["phase"], row["task"], row["method"], str(row["k"]), row["variant"]) for row in rows
            if row["score"] != "failed"}
    todo = [job for job in jobs(phase) if (job[0], job[1], job[2], str(job[3]), job[4]) not in done]
    with ThreadPoolExecutor(max_workers=2) as pool:
        for row in pool.map(lambda job: run_one(*job), todo):
            rows.append(row)
            save(rows)
            print(row["task"], row["method"], row["k"], row["variant"], row["score"], row.get("train_loss"), flush=True)


if __name__ == "__main__":
    main()
