"""benchmarks.score rows -> score_<device>.md (per-task tables and the target), .csv (every point),
.png (dev score against wall time, one panel per task).

A configuration reaches the Trainer's score at its first point within WITHIN points of the reference
Trainer's final dev score (benchmarks.score.REFERENCE); the reference Trainer's own time is its
first point meeting the same bar. The target: some hsv_exp configuration gets there in at most
TARGET of the Trainer's time, on every task. Reported as measured, met or missed.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from pathlib import Path

from benchmarks.bench_report import write_csv  # the points' csv: one writer for both benchmarks
from hsv_exp.atomic import write_figure, write_text

WITHIN = 1.0  # dev score points
TARGET = 0.5  # of the Trainer's time


@dataclass
class Report:
    options: object  # score.Options
    command: str
    device: str  # cpu | cuda
    machine: dict[str, str]
    auto: dict  # hsv_exp.precision.Precision.describe() of train.precision=auto here
    load_average: tuple  # (at start, now)
    tasks: dict[str, list]  # task -> [score.Row]
    budgets: dict[str, dict]  # task -> score.budget
    scans: dict[str, dict | None]  # task -> score.scan result (None: no variability configuration)
    reference: str  # the name of the reference configuration
    total_s: float
    k: int
    stem: str  # the output files' name: score_<device>[_quick]


@dataclass
class Summary:
    """One row's numbers against the task's reference Trainer."""

    best: float | None  # dev score points
    final: float | None
    time_s: float | None  # to within WITHIN points of the reference's final score; None: never (or no reference)
    fraction: float | None  # time_s / the reference's time_s
    wall_s: float | None


def score(point: dict, main_metric: str) -> float:
    return 100.0 * point["metrics"][main_metric]


def time_to(points: list[dict], main_metric: str, bar: float) -> float | None:
    return next((point["elapsed_s"] for point in points if score(point, main_metric) >= bar - 1e-9), None)


def reference_row(report: Report, task: str):
    return next((row for row in report.tasks[task] if row.config.name == report.reference and row.result), None)


def bar(report: Report, task: str) -> float | None:
    """The score a configuration must reach: the reference Trainer's final one, less WITHIN."""
    reference = reference_row(report, task)
    if reference is None or not reference.points:
        return None
    return score(reference.points[-1], reference.result["main_metric"]) - WITHIN


def summarize(report: Report, task: str) -> list[Summary]:
    threshold = bar(report, task)
    reference = reference_row(report, task)
    reference_time = time_to(reference.points, reference.result["main_metric"], threshold) if threshold is not None else None
    summaries = []
    for row in report.tasks[task]:
        if row.result is None or not row.points:
            summaries.append(Summary(None, None, None, None, None))
            continue
        metric = row.result["main_metric"]
        scores = [score(point, metric) for point in row.points]
        reached = time_to(row.points, metric, threshold) if threshold is not None else None
        summaries.append(Summary(max(scores), scores[-1], reached,
                                 reached / reference_time if reached is not None and reference_time else None,
                                 row.result["wall_s"] + row.extra_s))
    return summaries


def fastest(report: Report, task: str, impl: str):
    """(row, summary) of the `impl` row that reaches the bar soonest, or None."""
    reached = [(row, summary) for row, summary in zip(report.tasks[task], summarize(report, task))
               if row.config.impl == impl and summary.time_s is not None]
    return min(reached, key=lambda pair: pair[1].time_s, default=None)


def target_met(report: Report, task: str) -> bool | None:
    """None: not decidable yet (no finished reference Trainer)."""
    if bar(report, task) is None:
        return None
    best = fastest(report, task, "hsv_exp")
    return best is not None and best[1].fraction <= TARGET


# ---------------------------------------------------------------- csv
def point_rows(report: Report) -> list[dict]:
    out = []
    for task, task_rows in report.tasks.items():
        for row in task_rows:
            for point in row.points:
                metric = row.result["main_metric"]
                out.append({"task": task, "config": row.config.name, "label": row.label, "impl": row.config.impl,
                            "tuning": row.config.tuning, "select": row.config.select,
                            "rule": row.config.rule if row.config.select == "variability" else "",
                            "precision_requested": row.config.precision, "precision": row.result["precision"]["dtype"],
                            "measured_as": row.measured_as or "", "added_scan_s": row.extra_s, "epoch": point["epoch"],
                            "elapsed_s": point["elapsed_s"], "main_metric": metric, "score": score(point, metric),
                            **point["metrics"], "trainable_params": row.result["trainable_params"],
                            "wall_s": row.result["wall_s"] + row.extra_s})
    return out


# ---------------------------------------------------------------- markdown
def _f(value, pattern: str = "{:.1f}", missing: str = "—") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return pattern.format(value)


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(line) + " |" for line in lines), ""]


def _precision(row) -> str:
    if row.result is None:
        return row.config.precision
    dtype = row.result["precision"]["dtype"]
    return f"auto → {dtype}" if row.config.precision == "auto" else dtype


def _selection_text(report: Report, task: str) -> str:
    layers = {row.config.rule: row.result for row in report.tasks[task]
              if row.config.select == "variability" and row.result is not None and row.result.get("head_layer")}
    scan = report.scans.get(task)
    if scan is None:
        return ""
    scores = ", ".join(f"{value:.3g}" for value in scan["scores"])
    heads = "; ".join(f"{rule}: head on layer {result['head_layer']}, tuned {result['tuned_layers']}"
                      for rule, result in layers.items())
    return (f"Variability scan (`stage=scan`, {scan['num_examples']} examples): ν per layer 0..L = {scores}; "
            f"{scan['scan_s']:.1f} s of scan (its process: {scan['wall_s']:.1f} s). " + (heads + "." if heads else ""))


def task_section(report: Report, task: str) -> list[str]:
    threshold = bar(report, task)
    summaries = summarize(report, task)
    reference = reference_row(report, task)
    metric = reference.result["main_metric"] if reference else next(
        (row.result["main_metric"] for row in report.tasks[task] if row.result), "dev score")
    budget = report.budgets[task]
    examples = next((row.result["num_train_examples"] for row in report.tasks[task] if row.result), None)
    lines = [f"## {task}", "",
             f"{_f(examples, '{:,}', '?')} train examples, {budget['epochs']} epoch{'s' if budget['epochs'] != 1 else ''}, "
             f"batch {budget['batch_size']}, "
             f"lr {budget['lr']:g} (full) / {budget['pet_lr']:g} (adapter, LoRA), warm-up {budget['warmup_ratio']:.0%}, "
             f"max_length {budget['max_length']}; score: {metric} × 100. " + _selection_text(report, task), ""]
    header = ["configuration", "precision", "trainable params", "best dev", "final dev",
              f"time to ≥ Trainer final − {WITHIN:g} (s)", "fraction of Trainer's time", "total wall s", "note"]
    body = []
    for row, summary in zip(report.tasks[task], summaries):
        if row.result is None:
            body.append([row.label, row.config.precision, "—", "—", "—", "—", "—", "—", row.note])
            continue
        reached = _f(summary.time_s, "{:.1f}", "never" if threshold is not None else "—")
        fraction = _f(summary.fraction, "{:.2f}", "never" if threshold is not None else "—")
        if summary.fraction is not None and row.config.impl == "hsv_exp":
            fraction += " ✓" if summary.fraction <= TARGET else ""
        note = f"measured as {row.measured_as}" + (f" + {row.extra_s:.1f} s scan" if row.extra_s else "") if row.measured_as else ""
        name = f"**{row.label}**" if row.config.impl == "trainer" else row.label
        body.append([name, _precision(row), f"{row.result['trainable_params']:,}", _f(summary.best, "{:.2f}"),
                     _f(summary.final, "{:.2f}"), reached, fraction, _f(summary.wall_s), note])
    lines += _table(header, body)
    if threshold is None:
        lines += [f"The reference ({report.reference}) has not finished: no times to its score yet.", ""]
        return lines
    reference_time = summaries[report.tasks[task].index(reference)].time_s
    best = fastest(report, task, "hsv_exp")
    trainer_best = fastest(report, task, "trainer")
    bar_text = f"{threshold:.2f} (the Trainer's final {threshold + WITHIN:.2f} − {WITHIN:g})"
    if best is None:
        verdict = f"no hsv_exp configuration reaches {bar_text}: **target missed**."
    else:
        row, summary = best
        verdict = (f"fastest hsv_exp configuration to {bar_text}: {row.label}, {summary.time_s:.1f} s = "
                   f"{summary.fraction:.2f} of the Trainer's {reference_time:.1f} s: **target ≤ {TARGET:g} "
                   f"{'met' if summary.fraction <= TARGET else 'missed'}**.")
    if trainer_best is not None and trainer_best[0] is not reference:
        verdict += (f" The fastest Trainer row to the same bar is {trainer_best[0].label} "
                    f"({trainer_best[1].time_s:.1f} s, {trainer_best[1].fraction:.2f}).")
    lines += [f"**{task}**: {verdict}", ""]
    return lines


def target_line(report: Report) -> str:
    verdicts = {task: target_met(report, task) for task in report.tasks}
    decided = [task for task, met in verdicts.items() if met is not None]
    met = [task for task in decided if verdicts[task]]
    if len(decided) < len(verdicts):
        overall = f"decided on {len(decided)} of {len(verdicts)} tasks so far (met on {', '.join(met) or 'none'})"
    else:
        overall = ("**met on every task**" if len(met) == len(verdicts) else
                   f"**not met**: met on {', '.join(met) or 'no task'}, missed on "
                   f"{', '.join(task for task in decided if not verdicts[task])}")
    issue_tasks = ("rte", "mrpc", "sst2")  # the issue's; a run of fewer says which are still to come
    missing = [task for task in issue_tasks if task not in verdicts]
    scope = f" (tasks run: {', '.join(verdicts)}; not run yet: {', '.join(missing)})" if missing else ""
    overall = overall.replace("every task", "every task run so far") if missing else overall
    return (f"**Target** (some hsv_exp configuration reaches the Trainer's final dev score within {WITHIN:g} point in at "
            f"most {TARGET:g} of the Trainer's time, on every task): {overall}{scope}.")


def run_loads(report: Report) -> str:
    """The 1-minute load averages the measured runs themselves recorded (before and after each)."""
    loads = [load[0] for rows in report.tasks.values() for row in rows if row.result and not row.measured_as
             for load in row.result.get("load_average", [])]
    return f"; during the measured runs the 1-min load ranged {min(loads):.2f}-{max(loads):.2f}" if loads else ""


def markdown(report: Report) -> str:
    options = report.options
    auto = report.auto
    lines = [
        f"# Time to score: hsv_exp vs the Hugging Face Trainer ({report.device})", "",
        f"Produced by `{report.command}` on {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; this "
        f"invocation took {report.total_s / 60:.1f} min (finished configurations of earlier invocations of the same command "
        "are reused, see each result's `finished` in the work dir).", "",
        "Machine: " + ", ".join(f"{key} {value}" for key, value in report.machine.items()) + ".",
        f"Load average (1/5/15 min) at start {', '.join(f'{x:.2f}' for x in report.load_average[0])}, at end "
        f"{', '.join(f'{x:.2f}' for x in report.load_average[1])} of this invocation{run_loads(report)} (each result "
        "records its own): above the thread count means other work shared the CPUs.",
        f"`train.precision=auto` here: **{auto['dtype']}** ({auto['reason']}).", "",
        target_line(report), "",
        "How it was measured: every configuration in its own fresh process, "
        + ("one at a time" if options.jobs == 1 else f"{options.jobs} at a time") + f", {options.threads} torch threads. "
        f"Model `{options.model}`; train = hsv_exp's fixed stratified subsample of min({options.num_examples}, train split) "
        f"examples (`task.max_train_examples`, seed {options.seed}), the same examples and tokenization for the Trainer; "
        + (f"the first {options.max_eval_examples} dev examples" if options.max_eval_examples else "the whole dev split")
        + ". A point is one epoch: seconds from the process's start (interpreter, imports, model load, tokenization, the "
        "scan, cache builds) to the end of that epoch's dev evaluation. hsv_exp rows are the CLI, `python -m hsv_exp "
        f"task=T model={options.model} tuning=M select=S select.k={report.k} [select.rule=tolerance] "
        f"task.max_train_examples={options.num_examples} train.precision=fp32|auto logger=none`, frozen cache on "
        "(`train.cache_frozen=auto`); their times come from metrics.json (history's `time/elapsed_s`, `started_unix_s`). "
        "Trainer rows (`benchmarks/score_trainer.py`): `AutoModelForSequenceClassification` with its own head (for BERT-style "
        "models the pooler, dense + tanh on [CLS], then a linear layer; hsv_exp's head is linear on the mean-pooled "
        "layer), the same lr, batch size, epochs, 6% warm-up and linear decay, weight decay and clipping, "
        "`train_sampling_strategy=\"group_by_length\"` (transformers 5's name for `group_by_length=True`), "
        "`optim=\"adamw_torch_fused\"`, `eval_strategy=\"epoch\"` (eval batch as hsv_exp's), no saving or logging; dev "
        "scores from hsv_exp.glue_metrics, as hsv_exp's. LoRA rows: PEFT LoRA with hsv_exp's r, alpha, dropout on "
        "query/value. A row \"measured as\" another trains exactly what that one trains (variability choosing top-k's "
        "window, or `auto` resolving to fp32): it is that run, plus the scan's seconds (the forward pass and statistics, "
        "variability.json's `scan_seconds`; the scan's tokenization is not in it) where a variability row borrows a "
        "top-k run. Scores of one seed: differences of a point or two are within seed noise on these dev sets.", "",
    ]
    for task in report.tasks:
        lines += task_section(report, task)
    missing = [f"{task}: {row.label} ({row.note})" for task, task_rows in report.tasks.items() for row in task_rows
               if row.result is None]
    if missing:
        lines += ["## Not run yet", "", *(f"- {line}" for line in missing), ""]
    lines += [f"Every point: `{report.stem}.csv`; figure: `{report.stem}.png`.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- figure
def figure(report: Report):
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = list(report.tasks)
    fig = Figure(figsize=(max(9.0, 6.0 * len(tasks)), 7.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    # The Trainer in black (line style per configuration); hsv_exp one colour per (select, tuning), dashed for auto.
    palette = [color for index, color in enumerate(colormaps["tab10"].colors) if index != 7]  # tab10 less its grey
    trainer_styles = [dict(ls="-", marker="s"), dict(ls="--", marker="D"), dict(ls=":", marker="^")]
    configs = list(dict.fromkeys(row.config for task_rows in report.tasks.values() for row in task_rows))
    families = list(dict.fromkeys((config.select, config.rule, config.tuning) for config in configs if config.impl == "hsv_exp"))
    trainers = [config for config in configs if config.impl == "trainer"]
    styles = {}
    for config in configs:
        if config.impl == "trainer":
            styles[config] = dict(color="black", lw=2.2, ms=5, **trainer_styles[trainers.index(config) % len(trainer_styles)])
        else:
            family = families.index((config.select, config.rule, config.tuning))
            styles[config] = dict(color=palette[family % len(palette)], lw=1.3, marker="o", ms=3,
                                  ls="--" if config.precision == "auto" else "-")
    for axis, task in zip(axes, tasks):
        for row in report.tasks[task]:
            if row.points:
                metric = row.result["main_metric"]
                axis.plot([point["elapsed_s"] for point in row.points], [score(point, metric) for point in row.points],
                          label=row.label, **styles[row.config])
        threshold = bar(report, task)
        if threshold is not None:
            axis.axhline(threshold, color="black", lw=0.8, ls=":", label=f"Trainer final − {WITHIN:g}")
        metric = next((row.result["main_metric"] for row in report.tasks[task] if row.result), "dev score")
        axis.set_title(f"{task}: {metric} vs wall time")
        axis.set_xlabel("seconds since the process started")
        axis.set_ylabel(f"{metric} × 100")
        axis.set_xlim(left=0)  # from the process's start: what comes before the first epoch shows
        axis.grid(alpha=0.3)
    handles = {}
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=2 if len(tasks) == 1 else 4, fontsize=7)
    return fig


# ---------------------------------------------------------------- output
def write(report: Report, out: Path, stem: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.md", out / f"{stem}.csv", out / f"{stem}.png"]
    write_text(paths[0], markdown(report))
    write_csv(point_rows(report), paths[1])
    write_figure(paths[2], figure(report))
    return paths


def console_summary(report: Report) -> str:
    """The target line and the per-task tables, for the terminal."""
    return "\n".join([target_line(report), "", *(line for task in report.tasks for line in task_section(report, task))])
