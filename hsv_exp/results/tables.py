"""Tables of a study: runs.csv (one row per run dir) and the markdown of summary.md and robustness.md."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from hsv_exp.atomic import write_csv as write_rows
from hsv_exp.results.runs import (Condition, Curve, Run, condition_notes, head_layer_of, main_key, mean_curves, mean_scores,
                                 setting_label)

LEAD_COLUMNS = [
    "status", "task", "model", "tuning", "select", "k", "rule", "seed", "metric", "pooling",
    "head_layer", "tuned_layers", "num_layers", "main_metric", "best_epoch", "best_main",
    "last_epoch", "last_main", "scan_head_layer", "scan_seed", "scan_max_examples", "scan_majority_fraction",
]
TAIL_COLUMNS = ["error", "run_dir"]
TOLERANCES = (0.05, 0.10)  # where the tolerance rule would put the head, reported beside the argmin


def csv_row(run: Run) -> dict[str, Any]:
    info, scan = run.info, run.scan or {}
    row: dict[str, Any] = {"status": run.status, "run_dir": str(run.run_dir)}
    for key in ("task", "model", "tuning", "select", "k", "rule", "seed", "metric", "pooling",
                "head_layer", "num_layers", "main_metric", "error"):
        row[key] = info.get(key)
    for key in ("task", "model", "metric", "pooling"):
        row[key] = row[key] if row[key] is not None else scan.get(key)
    row["tuned_layers"] = " ".join(map(str, info["tuned_layers"])) if info.get("tuned_layers") else None
    if scan:
        row.update(scan_head_layer=head_layer_of(scan["layers"], scan["scores"]), scan_seed=scan.get("scan_seed", scan.get("seed")),
                   scan_max_examples=scan.get("max_examples"), scan_majority_fraction=scan.get("majority_fraction"))
    if run.status == "complete":
        key = main_key(info)
        row.update(main_metric=key, best_epoch=info["best"].get("epoch"), last_epoch=info["last"].get("epoch"),
                   best_main=info["best"][key], last_main=info["last"][key])
        for which in ("best", "last", "compute"):
            row.update({f"{which}/{name}": value for name, value in info[which].items() if name != "epoch"})
    return row


def write_csv(runs: list[Run], path: Path) -> None:
    rows = [csv_row(run) for run in runs]
    dynamic = sorted({key for row in rows for key in row} - set(LEAD_COLUMNS) - set(TAIL_COLUMNS))
    write_rows(path, rows, LEAD_COLUMNS + dynamic + TAIL_COLUMNS)


def mean_std(values: list[float], scale: float = 100.0) -> str:
    mean = statistics.fmean(values) * scale
    std = "—" if len(values) < 2 else f"{statistics.stdev(values) * scale:.2f}"
    return f"{mean:.2f} ± {std}"


def condition_table(conds: list[Condition]) -> list[str]:
    if not conds:
        return ["No completed runs.", ""]
    keys = sorted({main_key(run.info) for c in conds for run in c.runs})
    lines = [f"Main metric: {', '.join(f'`{k}`' for k in keys)}", "",
             "| model | tuning | select | rule | k | ℓ* | n seeds | reused | best-epoch score | last-epoch score | trainable params "
             "| train FLOPs % | inference FLOPs % | train time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for c in conds:
        heads = sorted({str(run.info.get("head_layer")) for run in c.runs})
        params, train, infer, time_s = (c.compute_mean(key) for key in (
            "trainable_params", "train_flops_fraction", "inference_flops_fraction", "train_time_s"))
        reused = sum(bool(run.info.get("reused_from")) for run in c.runs)
        cells = [c.model, c.tuning, c.select, c.rule, c.k, ", ".join(heads), str(len(c.runs)), str(reused),
                 mean_std(c.scores("best")), mean_std(c.scores("last")), fmt(params, "{:,.0f}"),
                 fmt(train, "{:.1%}"), fmt(infer, "{:.1%}"), fmt(time_s, "{:.1f}")]
        lines.append("| " + " | ".join(cells) + " |")
        notes += [f"- {c.label()}: {note}" for note in condition_notes(c)]
    return lines + [""] + (notes + [""] if notes else [])


def scan_lines(curves: list[Curve]) -> list[str]:
    lines = []
    for (task, model, metric, pooling, layers), settings in sorted(mean_curves(curves).items()):
        for setting, scans in sorted(settings.items(), key=lambda item: str(item[0])):
            scores = mean_scores(scans)
            head = head_layer_of(layers, scores)
            within = ", ".join(f"{head_layer_of(layers, scores, 'tolerance', t)} within {t:.0%}" for t in TOLERANCES)
            lines.append(f"- scan {model} ({metric}, {pooling} pooling; {setting_label(setting)}): "
                         f"ℓ* = {head} of L = {max(layers)} by argmin; by the tolerance rule {within} of the minimum "
                         f"({len(scans)} scan{'s' * (len(scans) > 1)}); ν = {', '.join(f'{v:.3g}' for v in scores)}")
    return lines + [""] if lines else []


def run_list(title: str, runs: list[Run], with_error: bool) -> list[str]:
    lines = [f"## {title}", ""]
    for run in runs:
        info = run.info or run.scan or {}
        what = " ".join(f"{key}={info[key]}" for key in ("task", "model", "tuning", "select", "k", "seed") if key in info)
        error = f": {run.info['error'].splitlines()[0] if run.info['error'] else ''}" if with_error else ""
        lines.append(f"- `{run.run_dir}` {what}{error}")
    return lines + (["None."] if not runs else []) + [""]


def fmt(value: float | None, pattern: str) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)


def robustness_markdown(curves: list[Curve], tasks: list[str]) -> str:
    lines = ["# Robustness of the variability scan", "",
             "ℓ* per scan and of the mean ν curve for each (max_examples, majority_fraction) setting.", ""]
    for task in tasks:
        lines += [f"## {task}", "", "| model | metric | max_examples | majority_fraction | n scans | ℓ* per scan "
                  "| ℓ* of mean ν | mean ν (layer 0..L) |", "|---|---|---|---|---|---|---|---|"]
        for (_, model, metric, pooling, layers), settings in sorted(mean_curves([c for c in curves if c.task == task]).items()):
            for (max_examples, majority), scans in sorted(settings.items(), key=lambda item: str(item[0])):
                mean = mean_scores(scans)
                cells = [model, f"{metric} ({pooling})", fmt(max_examples, "{}"), fmt(majority, "{}"),
                         str(len(scans)), ", ".join(str(head_layer_of(layers, c.scores)) for c in scans),
                         str(head_layer_of(layers, mean)), ", ".join(f"{v:.3g}" for v in mean)]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
