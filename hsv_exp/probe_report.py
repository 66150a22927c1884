"""`python -m hsv_exp.probe`: nu and the linear probe's dev score per layer, for each task -> results/probe/.

    python -m hsv_exp.probe --tasks rte mrpc stsb cola sst2 --model minilm --train-examples 1000 --seed 0

For each task: the seeded stratified train subsample the study trains on (run.load_data with
task.max_train_examples and seed, as `python -m hsv_exp` composes them) and the full dev split go
through the backbone once each; nu per layer comes from the train states and one probe per layer
is fitted on the same states (hsv_exp.probe). Written atomically to --out: probe.csv (task, layer,
nu, every dev metric), probe.md (the table, and per task the Spearman rho of nu against the
probe's main metric across layers 1..L and whether the argmin-nu layer is the best-probe layer),
summary.json and probe.png (nu and the probe score per layer, one panel per task).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import torch

from hsv_exp import data as data_lib
from hsv_exp.atomic import write_atomic, write_csv, write_json_atomic
from hsv_exp.backbone import load_backbone, load_tokenizer
from hsv_exp.config import Config
from hsv_exp.probe import layer_states, probe_layers, summarise

TASKS = ("rte", "mrpc", "stsb", "cola", "sst2")


def compose(model: str, task: str, train_examples: int | None, seed: int) -> Config:
    from hsv_exp.cli import compose as compose_overrides

    return compose_overrides([f"model={model}", f"task={task}", f"seed={seed}", "logger=none",
                              f"task.max_train_examples={train_examples if train_examples else 'null'}"])


def task_rows(cfg: Config, backbone, tokenizer) -> tuple[list[dict], dict]:
    from hsv_exp.run import load_data

    _, train_split, eval_splits = load_data(cfg)
    dev_split = next(iter(eval_splits.values()))
    started = time.perf_counter()
    states = {name: layer_states(backbone, data_lib.encode(tokenizer, split, cfg.train.max_length),
                                 tokenizer.pad_token_id, cfg.metric.pooling, cfg.scan.batch_size)
              for name, split in (("train", train_split), ("dev", dev_split))}
    forward_seconds = time.perf_counter() - started
    rows = probe_layers(states["train"], train_split.labels, states["dev"], dev_split.labels, cfg.task, cfg.metric.name)
    info = {"train_examples": len(train_split), "dev_examples": len(dev_split), "main_metric": cfg.task.main_metric,
            "forward_seconds": round(forward_seconds, 1), "probe_seconds": round(time.perf_counter() - started - forward_seconds, 1)}
    return [{"task": cfg.task.name, **row} for row in rows], {**info, **summarise(rows, cfg.task.main_metric)}


def markdown(rows: list[dict], summary: dict, command: str) -> str:
    out = io.StringIO()
    out.write(f"# Linear probe per layer beside nu\n\n`{command}`\n\n")
    out.write("Per task, across layers 1..L: Spearman rho of nu against the probe's dev score (negative = low nu, "
              "good layer), and whether the argmin-nu layer is the best-probe layer.\n\n")
    out.write("| task | metric | train / dev | rho(nu, probe) | argmin-nu layer | best-probe layer | same | "
              "probe at argmin nu | best probe |\n|---|---|---|---|---|---|---|---|---|\n")
    for task, info in summary.items():
        out.write(f"| {task} | {info['main_metric']} | {info['train_examples']} / {info['dev_examples']} | "
                  f"{info['spearman']:+.2f} | {info['argmin_nu_layer']} | {info['best_probe_layer']} | "
                  f"{'yes' if info['same_layer'] else 'no'} | {info['probe_at_argmin_nu']:.3f} | {info['best_probe']:.3f} |\n")
    out.write("\n| task | layer | nu | probe (dev, main metric) |\n|---|---|---|---|\n")
    for row in rows:
        out.write(f"| {row['task']} | {row['layer']} | {row['nu']:.4g} | {row[summary[row['task']]['main_metric']]:.3f} |\n")
    return out.getvalue()


def figure(rows: list[dict], summary: dict):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = list(summary)
    fig = Figure(figsize=(4.2 * len(tasks), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, task in zip(fig.subplots(1, len(tasks), squeeze=False).ravel(), tasks):
        metric = summary[task]["main_metric"]
        task_rows_ = [row for row in rows if row["task"] == task]
        layers = [row["layer"] for row in task_rows_]
        ax.plot(layers, [row["nu"] for row in task_rows_], marker="o", color="tab:blue", label="ν (train)")
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_ylabel("ν", color="tab:blue")
        twin = ax.twinx()
        twin.plot(layers, [row[metric] for row in task_rows_], marker="s", color="tab:red", label=f"probe {metric}")
        twin.set_ylabel(f"probe dev {metric}", color="tab:red")
        ax.set_title(f"{task}: ρ={summary[task]['spearman']:+.2f}, argmin ν={summary[task]['argmin_nu_layer']}, "
                     f"best probe={summary[task]['best_probe_layer']}", fontsize=9)
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hsv_exp.probe", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--train-examples", type=int, default=1000, help="stratified subsample (0 = whole split)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsample")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("results/probe"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = (f"python -m hsv_exp.probe --tasks {' '.join(args.tasks)} --model {args.model} "
               f"--train-examples {args.train_examples} --seed {args.seed}")
    rows, summary = [], {}
    backbone = tokenizer = None
    for task in args.tasks:
        cfg = compose(args.model, task, args.train_examples or None, args.seed)
        if backbone is None:
            backbone, tokenizer = load_backbone(cfg.model, cfg.seed), load_tokenizer(cfg.model)
        task_rows_, summary[task] = task_rows(cfg, backbone, tokenizer)
        rows += task_rows_
        print(task, json.dumps(summary[task]), flush=True)
    write_csv(args.out / "probe.csv", rows)
    write_atomic(args.out / "probe.md", lambda f: f.write(markdown(rows, summary, command)))
    write_json_atomic(args.out / "summary.json", {"command": command, "tasks": summary})
    fig = figure(rows, summary)
    write_atomic(args.out / "probe.png", lambda f: fig.savefig(f, format="png", dpi=120), binary=True)


if __name__ == "__main__":
    main()
