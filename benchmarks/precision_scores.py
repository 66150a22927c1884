"""Same seed, bf16 autocast vs fp32: are the dev scores equal within seed noise? (issue 10)

    PYTHONPATH=. python -m benchmarks.precision_scores [--tasks sst2 stsb] [--seeds 0 1 2] [--workers 2]

Each run is the real CLI, `python -m hsv_exp task=T model=minilm select=top select.k=2 tuning=full
task.max_train_examples=1000 train.epochs=2 train.batch_size=16 seed=S train.precision=P`, one thread
each, `--workers` at a time. Finished runs (metrics.json in the work dir) are not run again, so an
interrupted benchmark continues where it stopped. Writes results/bench/precision_scores_cpu.{md,csv}:
per task and seed the last-epoch main metric in fp32 and bf16, and the bf16 - fp32 differences beside
the fp32 seed-to-seed spread.
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hsv_exp.atomic import write_atomic
from hsv_exp.cli import run_in_child
from hsv_exp.user_cache import cache_root

REPO = Path(__file__).resolve().parent.parent
SETTINGS = ["model=minilm", "select=top", "select.k=2", "tuning=full", "task.max_train_examples=1000",
            "train.epochs=2", "train.batch_size=16", "train.lr=5e-5", "train.num_threads=1", "logger=none"]


def run(work: Path, task: str, seed: int, precision: str) -> dict:
    run_dir = work / f"{task}-s{seed}-{precision}"
    overrides = [f"task={task}", *SETTINGS, f"seed={seed}", f"train.precision={precision}"]
    metrics = run_in_child(overrides, run_dir)
    if metrics is None:
        raise SystemExit(f"error: python -m hsv_exp {' '.join(overrides)} did not complete (log: {run_dir}/hsv_exp.log)")
    key = metrics["optimized_metric"]
    return {"task": task, "seed": seed, "precision": precision, "metric": key, "score": metrics["last"][key],
            "chosen": metrics["compute"]["precision"]["dtype"], "train_time_s": round(metrics["compute"]["train_time_s"], 1),
            "command": "python -m hsv_exp " + " ".join(overrides)}


def report(rows: list[dict], command: str) -> str:
    by = {(row["task"], row["seed"], row["precision"]): row for row in rows}
    lines = ["# Same seed, bf16 autocast vs fp32: dev scores (CPU)\n", f"Command: `{command}`\n",
             f"Runs: `python -m hsv_exp task=T {' '.join(SETTINGS)} seed=S train.precision=fp32|bf16`"
             " (the exact commands are in precision_scores_cpu.csv).\n",
             "| task | metric | seed | fp32 | bf16 | bf16 - fp32 | fp32 s | bf16 s |", "|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for task in dict.fromkeys(row["task"] for row in rows):
        seeds = sorted({row["seed"] for row in rows if row["task"] == task and (task, row["seed"], "fp32") in by
                        and (task, row["seed"], "bf16") in by})
        diffs = []
        for seed in seeds:
            fp32, bf16 = by[(task, seed, "fp32")], by[(task, seed, "bf16")]
            diffs.append(bf16["score"] - fp32["score"])
            lines.append(f"| {task} | {fp32['metric']} | {seed} | {fp32['score']:.4f} | {bf16['score']:.4f} | {diffs[-1]:+.4f} "
                         f"| {fp32['train_time_s']} | {bf16['train_time_s']} |")
        if len(seeds) >= 2:
            spread = statistics.stdev(by[(task, seed, "fp32")]["score"] for seed in seeds)
            mean_abs = statistics.mean(abs(diff) for diff in diffs)
            verdicts.append(f"- {task}: mean |bf16 - fp32| = {mean_abs:.4f} over {len(seeds)} seeds; the fp32 seed-to-seed "
                            f"std = {spread:.4f} ({'within' if mean_abs <= spread else 'beyond'} seed noise).")
    return "\n".join(lines + ["", *verdicts, ""])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["sst2", "stsb"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=cache_root() / "precision_scores")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench")
    args = parser.parse_args(argv)
    jobs = [(task, seed, precision) for task in args.tasks for seed in args.seeds for precision in ("fp32", "bf16")]
    with ThreadPoolExecutor(args.workers) as pool:
        rows = list(pool.map(lambda job: run(args.work_dir, *job), jobs))
    command = "PYTHONPATH=. python -m benchmarks.precision_scores " + " ".join(sys.argv[1:] if argv is None else argv)
    text = io.StringIO()
    writer = csv.DictWriter(text, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(args.out / "precision_scores_cpu.csv", lambda f: f.write(text.getvalue()))
    write_atomic(args.out / "precision_scores_cpu.md", lambda f: f.write(report(rows, command.strip())))
    print(report(rows, command.strip()))


if __name__ == "__main__":
    main()
