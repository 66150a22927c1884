"""Issue 12's bar for "learned": whole-model full fine-tuning in hsv_exp must match what the Hugging
Face Trainer reaches on the same data and epochs, and clearly beat the majority class.

    python scripts/trainer_bar.py                 # runs the Trainer on each task (skips finished ones), then the table
    python scripts/trainer_bar.py --tasks rte     # one task
    python scripts/trainer_bar.py --report-only   # the table from what has run

Each Trainer run is `python -m benchmarks.score_trainer` (the time-to-score benchmark's Trainer, in
bf16 where `train.precision=auto` picks bf16 on this machine, fp32 elsewhere) on the study's composed
budget: the task config's epochs, lr and batch, the whole train split (SST-2: task=sst2_8k), seed 0,
one thread.
Results: results/study/trainer_bar/<task>.json, tracked, so --report-only rebuilds the table in any
checkout (until 2026-12-03 they went to ~/.cache/hsv_exp/trainer_bar/, lost with that machine's cache:
the table's Trainer cells were made then). The hsv_exp side: the pilot's run of the same
config (results/pilot/runs.csv) and the study's own run
(<--study>/+condition=all,seed=0,task=T,tuning=full/metrics.json, --study default multirun/study_full).
Runs are deterministic on one machine and precision, not across them: the table names each cell's
precision and CPU, and the pilot and the study differ where those differ. Table: results/study/trainer_bar.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from hsv_exp.atomic import write_text

REPO = Path(__file__).resolve().parents[1]
TASKS = ("rte", "mrpc", "stsb", "cola", "sst2_8k")
STUDY = REPO / "multirun" / "study_full"
PILOT_RUNS = REPO / "results" / "pilot" / "runs.csv"
WORK = REPO / "results" / "study" / "trainer_bar"


def trainer_result(task: str) -> Path:
    return WORK / f"{task}.json"


def run_trainer(task: str) -> None:
    if trainer_result(task).is_file():
        return
    WORK.mkdir(parents=True, exist_ok=True)
    spec = WORK / f"{task}.spec.json"
    from hsv_exp import precision

    bf16 = precision.resolve("auto", "cpu").enabled
    spec.write_text(json.dumps({"overrides": [f"task={task}", "model=minilm", "seed=0", "train.num_threads=1", "logger=none"],
                                "tuning": "full", "bf16": bf16}))
    print(f"trainer_bar: {task} ...", flush=True)
    subprocess.run([sys.executable, "-m", "benchmarks.score_trainer", str(spec), str(trainer_result(task))], cwd=REPO, check=True)


def last_and_best(scores: list[float]) -> str:
    best = max(range(len(scores)), key=scores.__getitem__)
    return f"{100 * scores[-1]:.1f} (best {100 * scores[best]:.1f}, ep {best + 1})"


def majority(task: str) -> str:
    """The dev main metric of predicting the training split's most frequent class (regression: none)."""
    from hsv_exp import glue_metrics
    from hsv_exp.cli import compose
    from hsv_exp.run import load_data

    cfg = compose([f"task={task}", "seed=0", "logger=none"])
    if cfg.task.is_regression:
        return "— (constant: undefined)"
    data = load_data(cfg)
    labels = data.eval_splits[cfg.task.eval_splits[0]].labels
    predicted = np.full_like(labels, np.bincount(data.train.labels).argmax())
    return f"{100 * glue_metrics.compute([cfg.task.main_metric], predicted, labels)[cfg.task.main_metric]:.1f}"


def pilot_run(task: str) -> str:
    """The pilot's run at the task config's lr and epochs (results/pilot/runs.csv): the same config as
    the study's whole-model full FT on seed 0 (the pilot sweep pins batch 16, as the study does)."""
    from hsv_exp.cli import compose
    from hsv_exp.config import overrides_of_dirname

    train = compose([f"task={task}"]).train
    with open(PILOT_RUNS, newline="") as f:
        runs = list(csv.DictReader(f))
    for run in runs:
        settings = overrides_of_dirname(Path(run["run_dir"]).name)
        if (settings["task"], float(settings["train.lr"]), int(settings["train.epochs"])) == (task, train.lr, train.epochs):
            return f"{100 * float(run['last_main']):.1f} (best {100 * float(run['best_main']):.1f}, ep {run['best_epoch']})"
    return "not run"


def row(task: str, study: Path = STUDY) -> str:
    from hsv_exp.precision import machine_label

    cells, machines = [task, majority(task)], []
    if trainer_result(task).is_file():
        result = json.loads(trainer_result(task).read_text())
        metric = result["main_metric"]
        cells.append(last_and_best([point["metrics"][metric] for point in result["points"]]))
        cells.append(f"{sum(result['epoch_train_s']):.0f}")
        machines.append(machine_label(result["precision"]))
    else:
        cells += ["not run", ""]
        machines.append("—")
    cells.append(pilot_run(task))
    ours = study / f"+condition=all,seed=0,task={task},tuning=full" / "metrics.json"
    if ours.is_file():
        metrics = json.loads(ours.read_text())
        cells.append(last_and_best([epoch[metrics["optimized_metric"]] for epoch in metrics["history"]]))
        machines.append(machine_label(metrics["compute"]["precision"]))
    else:
        cells.append("not run")
        machines.append("—")
    return "| " + " | ".join(cells + [" / ".join(machines)]) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--study", type=Path, default=STUDY, help="the study's sweep dir (default multirun/study_full)")
    args = parser.parse_args(argv)
    tasks = args.tasks.split(",")
    if unknown := sorted(set(tasks) - set(TASKS)):
        parser.error(f"--tasks: unknown {', '.join(unknown)} (choose from {', '.join(TASKS)})")
    if not args.report_only:
        for task in tasks:
            run_trainer(task)
    lines = ["# Whole-model full fine-tuning: the Hugging Face Trainer beside hsv_exp (issue 12's bar)", "",
             "`python scripts/trainer_bar.py` (seed 0, the task configs' budget, one thread). "
             "Dev main metric ×100, last epoch (best epoch). The pilot's runs were bf16 on an AMD EPYC "
             "(`results/pilot/runs.csv`); the last column names the Trainer's and the study run's.", "",
             "| task | majority class | Trainer | Trainer training s | hsv_exp (pilot run) | hsv_exp (study run) | precision, CPU: Trainer / study run |",
             "|---|---|---|---|---|---|---|",
             *(row(task, args.study) for task in TASKS)]
    text = "\n".join(lines) + "\n"
    print(text)
    write_text(REPO / "results" / "study" / "trainer_bar.md", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
