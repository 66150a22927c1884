"""Projected cost of sweeps/lowres.yaml from a few measured runs (issue 11's budget).

    python scripts/lowres_budget.py MEASURED_RUN_DIR ... [--cpu-share 0.59] [--done results/lowres/runs.csv]

Each complete measured run dir (a lowres job, any task, N and epochs) gives seconds and tokens:
training (compute.train_time_s over training tokens) and dev evaluation ((train_wall_s -
train_time_s) over dev tokens, every epoch), by selection (whole model / window) and regularizer;
each rate is total seconds over total tokens. MVCR is an extra training cost per token (the HAEs
do not depend on the window). EH-FT and LP-FT are priced as plain fine-tuning (stage 1 takes a
tenth of the same epochs). The runs are grouped by CPU model and precision (metrics.json's
compute.precision) and each group with the rates it needs prices the sweep on its own. The five
tasks' token counts come from their GLUE files (MiniLM tokenizer, max length 128): every job is
priced as startup + epochs x (N x mean train length x training rate + dev tokens x eval rate).
The rates are wall seconds at the load the runs were measured under; --cpu-share (the measured
runs' (user + sys) / wall, from /usr/bin/time) turns them into CPU seconds, i.e. the wall time of
an uncontended one-thread run.

--done prices the complete jobs of a runs.csv (python -m hsv_exp.results ... --report lowres) with
the same per-job projection and prints what is done and what is left of the sweep.

The projection in sweeps/lowres.yaml's header, from every complete lowres run:
    python scripts/lowres_budget.py multirun/lowres*/+condition=*
How far the sweep has got, in projected CPU-hours:
    python scripts/lowres_budget.py multirun/lowres*/+condition=* --done results/lowres/runs.csv
Run time a session spent (its start from `date +%s`), the figure its issue note gives:
    python scripts/lowres_budget.py multirun/lowres/+condition=* --since 1796649134

--since UNIX_S prints only that: tables.md's compute lines (hsv_exp.results.lowres.compute_hours:
train_wall_s summed, both stages and the dev evaluations, reused runs left out) over the complete
runs whose last process started after UNIX_S (metrics.json's started_unix_s). A run resumed in the
window counts whole (train_wall_s sums its resumes).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml

from hsv_exp.backbone import load_tokenizer
from hsv_exp.cli import compose
from hsv_exp.config import overrides_of_dirname
from hsv_exp.data import encode, load_split
from hsv_exp.precision import machine_label
from hsv_exp.results.lowres import compute_hours
from hsv_exp.results.runs import Run, load_run

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


def _run_record(info: dict) -> dict:
    """What one measured run (its metrics.json) contributes: its seconds and tokens, and where they are counted."""
    compute = info["compute"]
    where = "all" if info["select"] == "all" else "window"
    mvcr = (info["config"].get("regularizer") or {}).get("name") == "mvcr"
    return {
        "machine": machine_label(compute["precision"]),
        "task": info["task"], "where": where, "mvcr": mvcr, "n": info["num_train_examples"],
        "train_s": compute["train_time_s"],
        "train_tokens": compute["mean_seq_len"] * info["num_train_examples"] * len(info["history"]),
        "eval_s": compute["train_wall_s"] - compute["train_time_s"],
        "evaluations": sum(record.get("phase") != "ae_only" for record in info["history"]),
    }


def measured_rates(records: list[dict], dev_tokens: dict[str, int]) -> dict[str, float]:
    """Seconds per token: train/eval for 'all' and 'window', and MVCR's extra training cost.

    Each rate is total seconds over total tokens of its runs, so long runs weigh as much as they
    cost (a mean of per-run rates lets a few short runs with a high per-token overhead set it).
    """
    seconds, tokens = defaultdict(float), defaultdict(float)
    for r in records:
        train_key = f"train_{r['where']}{'_mvcr' * r['mvcr']}"
        seconds[train_key] += r["train_s"]
        tokens[train_key] += r["train_tokens"]
        seconds[f"eval_{r['where']}"] += r["eval_s"]
        tokens[f"eval_{r['where']}"] += r["evaluations"] * dev_tokens[r["task"]]
    rates = {key: seconds[key] / tokens[key] for key in seconds}
    missing = {"train_all", "train_all_mvcr", "eval_all", "train_window", "eval_window"} - set(rates)
    if missing:
        raise ValueError(f"lack {', '.join(sorted(missing))} (need whole-model plain and MVCR runs and a window run)")
    rates["mvcr_extra"] = rates["train_all_mvcr"] - rates["train_all"]
    return rates


def price(rates: dict[str, float], where: str, mvcr: bool, epochs: float, train_tokens_per_epoch: float, dev: int) -> float:
    """Wall seconds of one job at the measured load (startup excluded)."""
    train = rates[f"train_{where}"] + (rates["mvcr_extra"] if mvcr else 0.0)
    return epochs * (train_tokens_per_epoch * train + dev * rates[f"eval_{where}"])


JOB_KEY = ("seed", "+size", "task", "+strategy", "+condition")  # the overrides that name one lowres job


def done_jobs(runs_csv: Path) -> set[tuple[str, str, str, str, str]]:
    """(seed, size, task, strategy, condition) of each complete job in a runs.csv, from its run dir's name."""
    jobs = set()
    with runs_csv.open() as f:
        reader = csv.DictReader(f)
        lacking = {"status", "run_dir"} - set(reader.fieldnames or ())
        if lacking:
            raise ValueError(f"no {' or '.join(sorted(lacking))} column (not a runs.csv of hsv_exp.results)")
        for line, row in enumerate(reader, start=2):
            if row["status"] != "complete":
                continue
            overrides = overrides_of_dirname(Path(row["run_dir"]).name)
            missing = [key for key in JOB_KEY if key not in overrides]
            if missing:
                raise ValueError(f"line {line}: run dir {row['run_dir']} names no {', '.join(missing)} (not a lowres sweep job)")
            jobs.add(tuple(overrides[key] for key in JOB_KEY))
    return jobs


def split_cost(job_seconds: dict[tuple, float], done: set[tuple]) -> tuple[float, float]:
    """(seconds of the done jobs, seconds left) of a sweep priced per (seed, size, task, strategy, condition)."""
    unknown = sorted(done - set(job_seconds))
    if unknown:
        raise ValueError(f"done jobs outside the sweep: {', '.join('/'.join(job) for job in unknown)}")
    spent = sum(job_seconds[job] for job in done)
    return spent, sum(job_seconds.values()) - spent


def complete_runs(run_dirs: list[Path]) -> list[Run]:
    return [run for run in map(load_run, run_dirs) if run is not None and run.status == "complete"]


def run_time_since(run_dirs: list[Path], since: float) -> list[str]:
    """tables.md's compute lines over the complete runs among run_dirs that started after `since`."""
    return compute_hours([run for run in complete_runs(run_dirs) if run.info["started_unix_s"] > since])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--cpu-share", type=float, default=1.0)
    parser.add_argument("--done", type=Path, help="a lowres runs.csv: price its complete jobs and what is left")
    parser.add_argument("--since", type=float, metavar="UNIX_S", help="only print the run time of the runs started after UNIX_S")
    args = parser.parse_args()
    if args.since is not None:
        lines = run_time_since(args.run_dirs, args.since)
        print(f"complete runs started after {args.since:.0f}:", *lines or ["none"], sep="\n")
        return
    done = None
    if args.done is not None:
        if not args.done.is_file():
            sys.exit(f"error: --done {args.done}: no such file")
        try:
            done = done_jobs(args.done)
        except ValueError as error:
            sys.exit(f"error: --done {args.done}: {error}")
    sweep = yaml.safe_load((REPO / "sweeps" / "lowres.yaml").read_text())["hydra"]["sweeper"]["params"]
    axes = {key.lstrip("+"): str(value).split(",") for key, value in sweep.items()}
    sizes = {name: yaml.safe_load((REPO / "conf" / "size" / f"{name}.yaml").read_text()) for name in axes["size"]}
    counts = {task: token_counts(task) for task in axes["task"]}
    dev_tokens = {task: dev for task, (_, dev) in counts.items()}
    complete = complete_runs(args.run_dirs)
    if len(complete) < len(args.run_dirs):
        print(f"skipped {len(args.run_dirs) - len(complete)} run dirs that are not complete (running, stopped or failed)", file=sys.stderr)
    records = [_run_record(run.info) for run in complete]
    unknown = sorted({r["task"] for r in records} - set(dev_tokens))
    if unknown:
        sys.exit(f"error: measured runs of tasks outside the sweep: {', '.join(unknown)}")
    # Rates from one machine and precision never price another: seconds per token differ ~2x between
    # an fp32 AMD EPYC core and a bf16 AMX Xeon core.
    machines = defaultdict(list)
    for r in records:
        machines[r["machine"]].append(r)
    priced = 0
    for machine, group in sorted(machines.items()):
        print(f"## {machine}: {len(group)} measured runs")
        try:
            rates = measured_rates(group, dev_tokens)
        except ValueError as error:
            print(f"not priced: these runs {error}")
            continue
        priced += 1
        job_seconds = project(rates, group, axes, sizes, counts, args.cpu_share)
        if done is not None:
            try:
                spent, left = split_cost(job_seconds, done)
            except ValueError as error:
                sys.exit(f"error: --done {args.done}: {error}")
            print(f"done: {len(done)} of {len(job_seconds)} jobs, {args.cpu_share * spent / 3600:.1f} CPU-hours; "
                  f"left: {len(job_seconds) - len(done)} jobs, {args.cpu_share * left / 3600:.1f} CPU-hours")
    if not priced:
        sys.exit("error: no machine's measured runs cover the rates the projection needs")


def project(rates: dict[str, float], records: list[dict], axes: dict, sizes: dict, counts: dict, cpu_share: float) -> dict[tuple, float]:
    """Print the rates, how they price the measured runs by size, and the sweep's projected cost.

    Returns each job's seconds at the measured load, keyed (seed, size, task, strategy, condition).
    """
    print("seconds per 1k tokens (at the measured load): " + ", ".join(f"{k} {1000 * v:.3f}" for k, v in sorted(rates.items())))
    # One rate per kind of token prices all measured runs together exactly; how well it prices each
    # training-set size apart says whether it extrapolates (fixed per-epoch costs would show here).
    by_n = defaultdict(lambda: [0.0, 0.0])
    for r in records:
        size = min(sizes, key=lambda name: abs(sizes[name]["task"]["max_train_examples"] - r["n"]))
        by_n[size][0] += r["train_s"] + r["eval_s"]
        by_n[size][1] += price(rates, r["where"], r["mvcr"], 1, r["train_tokens"], r["evaluations"] * counts[r["task"]][1])
    print("check, measured runs by size: " + ", ".join(
        f"{size} took {spent / 3600:.2f} h, priced {priced / 3600:.2f} h" for size, (spent, priced) in sorted(by_n.items())))
    job_seconds = {}
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
                    jobs.append(STARTUP_S + price(rates, where, "mvcr" in strategy, epochs, n * length, dev))
                    for seed in axes["seed"]:
                        job_seconds[(seed, name, task, strategy, condition)] = jobs[-1]
            cells.append(f"{cpu_share * statistics.fmean(jobs):.0f}")
        print(f"| {task} | {length:.1f} | {dev:,} | " + " | ".join(cells) + " |")
    total = sum(job_seconds.values())
    print(f"{len(job_seconds)} jobs: {total / 3600:.1f} h at the measured load, {cpu_share * total / 3600:.1f} CPU-hours "
          f"(x {cpu_share}); two one-thread processes on two free cores: {cpu_share * total / 7200:.1f} h wall")
    return job_seconds


if __name__ == "__main__":
    main()
