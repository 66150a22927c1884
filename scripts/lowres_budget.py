"""Projected cost of sweeps/lowres.yaml from a few measured runs (issue 11's budget).

    python scripts/lowres_budget.py MEASURED_RUN_DIR ... [--cpu-share 0.59]

Each measured run dir (a complete lowres job, any task, N and epochs) gives seconds per token:
training (compute.train_time_s per training token) and dev evaluation ((train_wall_s -
train_time_s) per dev token, every epoch), by selection (whole model / window) and regularizer;
MVCR is an extra training cost per token (the HAEs do not depend on the window). EH-FT and LP-FT
are priced as plain fine-tuning (stage 1 takes a tenth of the same epochs). The five tasks' token
counts come from their GLUE files (MiniLM tokenizer, max length 128): every job of the sweep is
priced as startup + epochs x (N x mean train length x training rate + dev tokens x eval rate).
The rates are wall seconds at the load the runs were measured under; --cpu-share (the measured
runs' (user + sys) / wall, from /usr/bin/time) turns them into CPU seconds, i.e. the wall time of
an uncontended one-thread run.

The measurement behind sweeps/lowres.yaml's header (seed 0, one thread, each under /usr/bin/time):
    M="-m -cd sweeps -cn lowres seed=0 train.num_threads=1 logger=none hydra.sweep.dir=/tmp/lowres_measure"
    python -m hsv_exp $M +size=n100 task=rte +strategy=plain +condition=all
    python -m hsv_exp $M +size=n100 task=stsb +strategy=plain +condition=all train.epochs=4
    python -m hsv_exp $M +size=n100 task=rte +strategy=mvcr +condition=all train.epochs=4
    python -m hsv_exp $M +size=n1000 task=rte +strategy=plain +condition=all train.epochs=1
    python -m hsv_exp $M +size=n100 task=rte +strategy=plain +condition=top_k2 train.epochs=4   # RTE's window, no scan
    python -m hsv_exp $M +size=n500 task=stsb +strategy=plain +condition=all
    python scripts/lowres_budget.py /tmp/lowres_measure/+condition=* --cpu-share 0.55
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml

from hsv_exp.backbone import load_tokenizer
from hsv_exp.cli import compose
from hsv_exp.data import encode, load_split

REPO = Path(__file__).resolve().parents[1]
STARTUP_S = 12.0  # process start, model and data loading: (process wall - train_wall_s) of the measured runs, 10-15 s


def token_counts(task: str) -> tuple[float, int]:
    """(mean training-example length, total dev tokens) of a GLUE task."""
    cfg = compose([f"task={task}", "logger=none"])
    tokenizer = load_tokenizer(cfg.model)
    train = encode(tokenizer, load_split(cfg.task, cfg.task.train_split), cfg.train.max_length)
    dev = encode(tokenizer, load_split(cfg.task, cfg.task.eval_splits[0]), cfg.train.max_length)
    lengths = [len(f["input_ids"]) for f in train.features]
    return sum(lengths) / len(lengths), sum(len(f["input_ids"]) for f in dev.features)


def measured_rates(run_dirs: list[Path], dev_tokens: dict[str, int]) -> dict[str, float]:
    """Seconds per token: train/eval for 'all' and 'window', and MVCR's extra training cost."""
    rates = defaultdict(list)
    for run_dir in run_dirs:
        info = json.loads((run_dir / "metrics.json").read_text())
        compute, epochs = info["compute"], len(info["history"])
        where = "all" if info["select"] == "all" else "window"
        tokens = compute["mean_seq_len"] * info["num_train_examples"] * epochs
        mvcr = (info["config"].get("regularizer") or {}).get("name") == "mvcr"
        rates[f"train_{where}{'_mvcr' * mvcr}"].append(compute["train_time_s"] / tokens)
        evaluated = sum(record.get("phase") != "ae_only" for record in info["history"])
        rates[f"eval_{where}"].append((compute["train_wall_s"] - compute["train_time_s"]) / (evaluated * dev_tokens[info["task"]]))
    rates = {key: statistics.fmean(values) for key, values in rates.items()}
    missing = {"train_all", "train_all_mvcr", "eval_all", "train_window", "eval_window"} - set(rates)
    if missing:
        sys.exit(f"error: the measured runs lack {', '.join(sorted(missing))} (need whole-model plain and MVCR runs and a window run)")
    rates["mvcr_extra"] = rates["train_all_mvcr"] - rates["train_all"]
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--cpu-share", type=float, default=1.0)
    args = parser.parse_args()
    sweep = yaml.safe_load((REPO / "sweeps" / "lowres.yaml").read_text())["hydra"]["sweeper"]["params"]
    axes = {key.lstrip("+"): str(value).split(",") for key, value in sweep.items()}
    sizes = {name: yaml.safe_load((REPO / "conf" / "size" / f"{name}.yaml").read_text()) for name in axes["size"]}
    counts = {task: token_counts(task) for task in axes["task"]}
    rates = measured_rates(args.run_dirs, {task: dev for task, (_, dev) in counts.items()})
    print("seconds per 1k tokens (at the measured load): " + ", ".join(f"{k} {1000 * v:.3f}" for k, v in sorted(rates.items())))
    seeds = len(axes["seed"])
    total = 0.0
    print("| task | mean train len | dev tokens | " + " | ".join(f"{name}: CPU s per job (mean)" for name in sizes) + " |")
    print("|---|---|---|" + "---|" * len(sizes))
    for task, (length, dev) in counts.items():
        cells = []
        for name, size in sizes.items():
            n, epochs = size["task"]["max_train_examples"], size["train"]["epochs"]
            jobs = []
            for strategy in axes["strategy"]:
                for condition in axes["condition"]:
                    where = "all" if condition == "all" else "window"
                    train = rates[f"train_{where}"] + (rates["mvcr_extra"] if "mvcr" in strategy else 0.0)
                    jobs.append(STARTUP_S + epochs * (n * length * train + dev * rates[f"eval_{where}"]))
            total += seeds * sum(jobs)
            cells.append(f"{args.cpu_share * statistics.fmean(jobs):.0f}")
        print(f"| {task} | {length:.1f} | {dev:,} | " + " | ".join(cells) + " |")
    jobs = seeds * len(axes["task"]) * len(axes["strategy"]) * len(axes["condition"]) * len(sizes)
    print(f"{jobs} jobs: {total / 3600:.1f} h at the measured load, {args.cpu_share * total / 3600:.1f} CPU-hours "
          f"(x {args.cpu_share}); two one-thread processes on two free cores: {args.cpu_share * total / 7200:.1f} h wall")


if __name__ == "__main__":
    main()
