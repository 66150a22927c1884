"""benchmarks.bench measurements -> bench_<device>.csv (raw numbers), .md (tables, ratios, targets), .png.

Speed-ups are against our full fine-tuning of all layers (`ours all full`) of the same task and
epoch. The predicted speed-up is 1 / `train_flops_fraction` of `hsv_exp.compute.accounting`;
epochs after the first of a cached run use `train_flops_fraction_cached` (the frozen prefix no
longer runs). Targets are checked as measured and reported PASS or MISS, nothing else.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

from hsv_exp.atomic import write_atomic, write_figure, write_text

SCAN_TARGET = 1.15  # scan time / plain inference time, at most
RATIO_TARGET = 0.9  # measured / predicted speed-up, at least
CACHE_TARGET = 3.0  # speed-up of cached epochs after the first, when k <= L / 3
BASELINE = "ours all full"


@dataclass
class Report:
    options: object  # bench.Options
    device: torch.device
    command: str
    machine: dict[str, str]
    inference: list[dict]
    training: list[tuple]  # (TrainSpec, measurement dict, measured-as label)
    mean_lengths: dict[str, float]
    num_layers: int
    estimate_s: float
    total_s: float
    load_average: tuple = ((), ())
    contention: dict | None = None  # bench.contention_probe on CPU


def machine_info(device: torch.device, threads: int) -> dict[str, str]:
    import peft
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cpus visible": str(os.cpu_count()), "torch threads": str(threads), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10, cwd=Path(__file__).parent).stdout.strip()
        info["git commit"] = commit + (" (with uncommitted changes)" if dirty else "") if commit else "unknown"
    except (OSError, subprocess.SubprocessError):
        info["git commit"] = "unknown"
    return info


# ---------------------------------------------------------------- rows
def _predicted_fraction(spec, measurement: dict, epoch: int) -> float:
    flops = measurement["flops"]
    return flops["train_flops_fraction_cached"] if spec.cache == "memory" and epoch > 1 else flops["train_flops_fraction"]


def training_rows(report: Report) -> list[dict]:
    """One row per training configuration, with per-epoch times, speed-ups and predictions."""
    baselines = {spec.task: measurement for spec, measurement, _ in report.training if spec.label == BASELINE}
    rows = []
    for spec, measurement, measured_as in report.training:
        base = baselines.get(spec.task)
        row = {"kind": "train", "task": spec.task, "config": spec.label, "impl": spec.impl, "select": spec.select,
               "k": len(spec.selection.tuned_layers), "head_layer": spec.selection.head_layer,
               "tuned_layers": " ".join(map(str, spec.selection.tuned_layers)), "tuning": spec.tuning, "cache": spec.cache,
               "measured_as": "" if measured_as == spec.label else measured_as}
        for epoch, seconds in enumerate(measurement["epoch_times"], start=1):
            predicted = 1.0 / _predicted_fraction(spec, measurement, epoch)
            speedup = base["epoch_times"][epoch - 1] / seconds if base else math.nan
            row.update({f"epoch{epoch}_s": seconds, f"speedup_e{epoch}": speedup, f"predicted_speedup_e{epoch}": predicted,
                        f"measured_over_predicted_e{epoch}": speedup / predicted})
        row.update({key: measurement[key] for key in ("cache_build_s", "trainable_params", "injected_params", "train_loss",
                                                       "peak_memory_mb", "memory_before_train_mb", "memory_kind", "wall_s")})
        rows.append(row)
    return rows


def all_rows(report: Report) -> list[dict]:
    common = {"device": report.device.type, "n_examples": report.options.num_examples}
    rows = [{**common, "mean_seq_len": report.mean_lengths[row["task"]], **row} for row in report.inference]
    rows += [{**common, "mean_seq_len": report.mean_lengths[row["task"]], **row} for row in training_rows(report)]
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    import csv

    columns = []
    for row in rows:
        columns += [key for key in row if key not in columns]

    def write(handle) -> None:
        writer = csv.DictWriter(handle, fieldnames=columns or ["task"], restval="")  # no rows: a header all the same
        writer.writeheader()
        for row in rows:
            writer.writerow({key: f"{value:.6g}" if isinstance(value, float) else value for key, value in row.items()})

    write_atomic(path, write)


# ---------------------------------------------------------------- targets
def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def targets(report: Report, rows: list[dict]) -> dict[str, list[tuple[str, float, bool]]]:
    """target name -> [(what, value, met)]."""
    checks: dict[str, list[tuple[str, float, bool]]] = {"scan": [], "ratio": [], "cache": []}
    for row in report.inference:
        if row["config"] == "variability scan":
            checks["scan"].append((row["task"], row["ratio_vs_plain"], row["ratio_vs_plain"] <= SCAN_TARGET))
    epochs = report.options.epochs
    for row in rows:
        if row.get("kind") != "train" or row["impl"] != "ours" or row["config"] == BASELINE:
            continue
        for epoch in range(1, epochs + 1):
            ratio = row[f"measured_over_predicted_e{epoch}"]
            checks["ratio"].append((f"{row['task']} {row['config']} e{epoch}", ratio, ratio >= RATIO_TARGET))
            if row["cache"] == "memory" and epoch > 1 and row["k"] * 3 <= report.num_layers:
                speedup = row[f"speedup_e{epoch}"]
                checks["cache"].append((f"{row['task']} {row['config']} e{epoch}", speedup, speedup >= CACHE_TARGET))
    return checks


# ---------------------------------------------------------------- markdown
def _f(value, pattern: str = "{:.2f}") -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return pattern.format(value)


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|", *("| " + " | ".join(line) + " |" for line in lines), ""]


def markdown(report: Report, rows: list[dict]) -> str:
    options = report.options
    checks = targets(report, rows)
    train_cfg_note = "batch size, lr, warm-up and max_length from conf/task/<task>.yaml (RTE, MRPC: 16, 5e-5, 6%, 128)"
    lines = [
        f"# hsv_exp speed benchmark ({report.device.type})", "",
        f"Produced by `{report.command}` on {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}, "
        f"in {report.total_s / 60:.1f} min (estimated at start: {report.estimate_s / 60:.1f} min).", "",
        "Machine: " + ", ".join(f"{key} {value}" for key, value in report.machine.items()) + ".",
        f"Load average (1/5/15 min) at start {', '.join(f'{x:.2f}' for x in report.load_average[0])}, "
        f"at end {', '.join(f'{x:.2f}' for x in report.load_average[1])}: above the thread count means other work shared the CPUs.",
        *([f"Contention check at start: a 256x384 @ 384x384 matmul took {report.contention['threads_ms']:.2f} ms on "
           f"{options.threads} threads, {report.contention['one_thread_ms']:.2f} ms on 1 "
           f"({report.contention['slowdown']:.1f}x; on idle CPUs {options.threads} threads are not slower than 1)"
           + (": **the CPUs were busy, these timings are not representative**." if report.contention["slowdown"] > 1.5 else ".")]
          if report.contention else []), "",
        f"Model {options.model.name} ({report.num_layers} layers); per task a fixed stratified subsample of N={options.num_examples} "
        f"train examples (seed {options.seed}); {options.epochs} epochs; {train_cfg_note}; top-k and variability tune k={options.k} layers. "
        f"Mean tokens per example: " + ", ".join(f"{task} {length:.1f}" for task, length in report.mean_lengths.items()) + "."
        + (" With so few examples, first-step costs (allocation, kernel selection) weigh far more than in a full run: "
           "a check of the plumbing, not a measurement." if options.num_examples < 256 else ""), "",
        "## Targets", "",
    ]
    scan_line = ", ".join(f"{task} {value:.3f}× {_verdict(ok)}" for task, value, ok in checks["scan"])
    target_lines = [[f"variability scan ≤ {SCAN_TARGET}× plain inference", scan_line]]
    for key, title in (("ratio", f"measured / FLOP-predicted speed-up ≥ {RATIO_TARGET} (our configurations, every epoch)"),
                       ("cache", f"cached epochs after the first ≥ {CACHE_TARGET:g}× faster than full FT (window ≤ L/3)")):
        passed = sum(ok for _, _, ok in checks[key])
        missed = [f"{what} ({value:.2f})" for what, value, ok in checks[key] if not ok]
        text = f"{passed} of {len(checks[key])} PASS" + (f"; MISS: {'; '.join(missed)}" if missed else "")
        target_lines.append([title, text if checks[key] else "not applicable"])
    lines += _table(["target", "result"], target_lines)

    lines += ["## 1. Variability scan vs inference", "",
              "Same examples and batches (64 per batch, dynamic padding), one process. Plain inference: last layer only "
              "(output_hidden_states=False), mean pooled, under torch.inference_mode. Scan: `hsv_exp.variability.scan` (all "
              "layers' states, streaming class statistics). Per-layer passes: the released code's way, L forward passes, "
              f"pass l truncated after layer l. Times are medians of {options.repeats} interleaved repeats (per-layer: one run).", ""]
    by_task: dict[str, dict[str, dict]] = {}
    for row in report.inference:
        by_task.setdefault(row["task"], {})[row["config"]] = row
    inference_lines = []
    for task, measured in by_task.items():
        plain, scan, per_layer = measured["plain inference"], measured["variability scan"], measured["per-layer passes"]
        ratio = scan["ratio_vs_plain"]
        inference_lines.append([task, str(options.num_examples), str(plain["batches"]), _f(plain["seconds"]), _f(scan["seconds"]),
                                f"{ratio:.3f}", _verdict(ratio <= SCAN_TARGET), _f(per_layer["seconds"]),
                                f"{per_layer['seconds'] / scan['seconds']:.2f}×"])
    lines += _table(["task", "examples", "batches", "plain s", "scan s", "scan / plain", f"≤ {SCAN_TARGET}", "per-layer s",
                     "per-layer / scan"], inference_lines)

    epochs = range(1, options.epochs + 1)
    lines += ["## 2. Training time per epoch", "",
              f"`hsv_exp.train.train` per configuration, each in a fresh child process. Speed-up: `{BASELINE}` seconds / "
              "this configuration's seconds, same task and epoch. Predicted: 1 / FLOP fraction of full FT from "
              "`hsv_exp.compute.accounting` (cache=memory, epochs ≥ 2: the cached fraction). Epoch 1 of a cached run includes "
              "building the cache. m/p: measured / predicted (target ≥ 0.9). HF rows: `transformers.Trainer` with its own "
              "defaults (fused AdamW, CLS pooler head) on the same data, batch size, lr, warm-up, epochs; no evaluation.", ""]
    for task in report.mean_lengths:
        header = ["configuration", "head", "tuned", "trainable"]
        for epoch in epochs:
            header += [f"e{epoch} s", f"speed-up e{epoch}", f"pred. e{epoch}", f"m/p e{epoch}"]
        header += ["cache build s", "measured as"]
        body = []
        for row in (row for row in rows if row.get("kind") == "train" and row["task"] == task):
            line = [row["config"], str(row["head_layer"]), row["tuned_layers"] + (" +emb" if row["select"] == "all" else ""),
                    f"{row['trainable_params']:,}"]
            for epoch in epochs:
                ratio = row[f"measured_over_predicted_e{epoch}"]
                mark = "" if row["impl"] != "ours" or row["config"] == BASELINE else (" ✓" if ratio >= RATIO_TARGET else " ✗")
                line += [_f(row[f"epoch{epoch}_s"]), _f(row[f"speedup_e{epoch}"], "{:.2f}×"),
                         _f(row[f"predicted_speedup_e{epoch}"], "{:.2f}×"), _f(ratio) + mark]
            line += [_f(row["cache_build_s"]) if row["cache"] == "memory" else "—", row["measured_as"] or "—"]
            body.append(line)
        lines += [f"### {task}", "", *_table(header, body)]

    kind = next((row["memory_kind"] for row in rows if row.get("kind") == "train"), "")
    lines += ["## 3. Peak memory", "",
              f"Per configuration ({kind}); on CPU each child's peak resident set (the libraries and data alone: "
              "`before training`)." if options.isolate != "none" else
              f"{kind} of the one process that ran everything (--isolate none): not per configuration.", ""]
    tasks = list(report.mean_lengths)
    memory: dict[str, dict[str, dict]] = {}
    for row in rows:
        if row.get("kind") == "train":
            memory.setdefault(row["config"], {})[row["task"]] = row
    memory_lines = []
    for config, per_task in memory.items():
        line = [config]
        for task in tasks:
            row = per_task.get(task)
            line += [_f(row["peak_memory_mb"], "{:.0f}") if row else "—", _f(row["memory_before_train_mb"], "{:.0f}") if row else "—"]
        memory_lines.append(line)
    header = ["configuration"] + [part for task in tasks for part in (f"{task} peak MB", f"{task} before training MB")]
    lines += _table(header, memory_lines)
    lines += ["Raw numbers: `" + f"bench_{report.device.type}.csv" + "`; figure: `" + f"bench_{report.device.type}.png" + "`.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- figure
def figure(report: Report, rows: list[dict]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = list(report.mean_lengths)
    train_rows = [row for row in rows if row.get("kind") == "train"]
    configs = list(dict.fromkeys(row["config"] for row in train_rows))
    fig = Figure(figsize=(15, 4 + 0.28 * len(configs)), layout="constrained")
    FigureCanvasAgg(fig)
    (ax_inf, ax_pred), (ax_time, ax_mem) = fig.subplots(2, 2, height_ratios=[1, max(1.0, len(configs) / 8)])
    colors = {task: color for task, color in zip(tasks, ("tab:blue", "tab:orange", "tab:green", "tab:red"))}
    width = 0.8 / max(1, len(tasks))

    names = ["plain inference", "variability scan", "per-layer passes"]
    for index, task in enumerate(tasks):
        seconds = [next(row["seconds"] for row in report.inference if row["task"] == task and row["config"] == name) for name in names]
        ax_inf.bar([position + index * width for position in range(len(names))], seconds, width, label=task, color=colors[task])
    ax_inf.set_xticks([position + width * (len(tasks) - 1) / 2 for position in range(len(names))], names)
    ax_inf.set_ylabel("seconds")
    ax_inf.set_title(f"1. scan vs inference (N={report.options.num_examples})")
    ax_inf.legend()

    ours = [row for row in train_rows if row["config"] != BASELINE]
    for task in tasks:
        for epoch, marker in zip(range(1, report.options.epochs + 1), "os^v"):
            points = [(row[f"predicted_speedup_e{epoch}"], row[f"speedup_e{epoch}"]) for row in ours if row["task"] == task]
            if points:
                ax_pred.scatter(*zip(*points), marker=marker, color=colors[task], label=f"{task} epoch {epoch}", alpha=0.8)
    limit = max([1.0] + [value for row in ours for key, value in row.items() if key.startswith(("speedup_e", "predicted_speedup_e"))
                          and isinstance(value, float) and math.isfinite(value)]) * 1.1
    ax_pred.plot([0, limit], [0, limit], color="grey", lw=1, label="measured = predicted")
    ax_pred.plot([0, limit], [0, RATIO_TARGET * limit], color="grey", lw=1, ls="--", label=f"{RATIO_TARGET} × predicted")
    ax_pred.set_xlabel("FLOP-predicted speed-up vs full FT")
    ax_pred.set_ylabel("measured speed-up")
    ax_pred.set_title("2. measured vs predicted speed-up")
    ax_pred.legend(fontsize=7)

    last = report.options.epochs
    for axis, key, title in ((ax_time, f"epoch{last}_s", f"seconds per epoch (epoch {last}; epoch 1 hatched)"),
                             (ax_mem, "peak_memory_mb", f"3. peak memory MB ({train_rows[0]['memory_kind'] if train_rows else ''})")):
        for index, task in enumerate(tasks):
            by_config = {row["config"]: row for row in train_rows if row["task"] == task}
            positions = [position + index * width for position in range(len(configs))]
            values = [by_config[config][key] if config in by_config else 0.0 for config in configs]
            axis.barh(positions, values, width, color=colors[task], label=task)
            if key.startswith("epoch"):
                first = [by_config[config]["epoch1_s"] if config in by_config else 0.0 for config in configs]
                axis.barh(positions, first, width, fill=False, hatch="//", edgecolor=colors[task], lw=0.5)
        axis.set_yticks([position + width * (len(tasks) - 1) / 2 for position in range(len(configs))], configs, fontsize=7)
        axis.set_xlabel("seconds" if key.startswith("epoch") else "MB")
        axis.invert_yaxis()
        axis.set_title(title if key != f"epoch{last}_s" else "2. " + title)
        axis.legend()
    return fig


# ---------------------------------------------------------------- output
def write(report: Report, out: Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = all_rows(report)
    stem = out / f"bench_{report.device.type}"
    paths = [stem.with_suffix(".csv"), stem.with_suffix(".md"), stem.with_suffix(".png")]
    write_csv(rows, paths[0])
    write_text(paths[1], markdown(report, rows))
    write_figure(paths[2], figure(report, rows))
    return paths


def console_summary(report: Report) -> str:
    """The targets and tables of the markdown, for the terminal."""
    text = markdown(report, all_rows(report))
    return text[text.index("## Targets"):]
