"""The learned study's pilot (sweeps/pilot.yaml, issue 12): per task, the dev curve of each run, one
per learning rate -> curves.md (the main metric after every epoch, the best starred), curves.png and
runs.csv. The study's epochs and lr per task are read off these curves.

    python -m hsv_exp.results multirun/pilot --out results/pilot --report pilot
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterable

from hsv_exp.atomic import write_figure, write_text
from hsv_exp.config import body_lr
from hsv_exp.results.plots import grid
from hsv_exp.results.outputs import read_runs, write_outputs
from hsv_exp.results.runs import Run, main_key
from hsv_exp.results.tables import run_list, write_csv


def lr_of(run: Run) -> float:
    """The lr the body trained at (hsv_exp.config.body_lr of the run's saved config)."""
    config = run.info["config"]
    return float(body_lr(config.get("tuning", {}).get("lr"), config["train"]["lr"]))


def curves(runs: list[Run]) -> dict[str, list[tuple[float, Run]]]:
    """task -> [(lr, run)] of the complete runs, by lr."""
    found = defaultdict(list)
    for run in runs:
        if run.status == "complete":
            found[run.info["task"]].append((lr_of(run), run))
    return {task: sorted(pairs, key=lambda pair: pair[0]) for task, pairs in sorted(found.items())}


def task_table(task: str, pairs: list[tuple[float, Run]]) -> list[str]:
    key = main_key(pairs[0][1].info)
    epochs = max(len(run.info["history"]) for _, run in pairs)
    examples = sorted({run.info.get("num_train_examples") for _, run in pairs}, key=str)
    lines = [f"## {task}", "", f"{key} × 100 after each epoch (whole-model full fine-tuning, seed "
             f"{pairs[0][1].info['seed']}, {', '.join(map(str, examples))} training examples); * = the run's best epoch; "
             "train loss and seconds of training at the last epoch.", "",
             "| lr | " + " | ".join(f"ep {epoch}" for epoch in range(1, epochs + 1)) + " | last train loss | train s |",
             "|---|" + "---|" * (epochs + 2)]
    for lr, run in pairs:
        history, best = run.info["history"], run.info["best"]["epoch"]
        cells = [f"{100 * record[key]:.1f}" + ("*" if record["epoch"] == best else "") for record in history]
        cells += [""] * (epochs - len(cells))
        lines.append(f"| {lr:g} | " + " | ".join(cells) + f" | {history[-1]['train/loss']:.3f} | "
                     f"{run.info['compute']['train_time_s']:.0f} |")
    return lines + [""]


def curves_markdown(runs: list[Run], command: str) -> str:
    found = curves(runs)
    lines = ["# Pilot: dev curves per learning rate", "", f"Produced by `{command}`.", ""]
    for task, pairs in found.items():
        lines += task_table(task, pairs)
    if not found:
        lines += ["No complete runs yet.", ""]
    lines += run_list("Failed runs", [run for run in runs if run.status == "failed"], with_error=True)
    lines += run_list("Incomplete runs", [run for run in runs if run.status == "incomplete"], with_error=False)
    return "\n".join(lines)


def curves_figure(found: dict[str, list[tuple[float, Run]]]):
    figure, axes = grid(len(found))
    for (task, pairs), ax in zip(found.items(), axes):
        key = main_key(pairs[0][1].info)
        for lr, run in pairs:
            history = run.info["history"]
            ax.plot([r["epoch"] for r in history], [100 * r[key] for r in history], marker="o", label=f"lr {lr:g}")
        ax.set(title=task, xlabel="epoch", ylabel=f"{key} ×100")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figure.suptitle("pilot: whole-model full fine-tuning, dev score per epoch")
    return figure


def aggregate(dirs: Iterable[Path], out: Path, command: str | None = None) -> tuple[list[Run], list[Path]]:
    """Read every run under `dirs`, write runs.csv, curves.md and curves.png into `out`."""
    runs, out, default_command = read_runs(dirs, out, "pilot")
    command = command or default_command
    found = curves(runs)
    outputs = {
        "runs.csv": lambda p: write_csv(runs, p),
        "curves.md": lambda p: write_text(p, curves_markdown(runs, command)),
        "curves.png": (lambda p: write_figure(p, curves_figure(found))) if found else None,
    }
    return runs, write_outputs(out, outputs)
