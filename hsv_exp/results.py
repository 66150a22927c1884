"""Run dirs -> runs.csv, summary.md, figures (and robustness.md/.png) under results/<study>.

    python -m hsv_exp.results multirun/2025-01-01 outputs/ --out results/<study>

A run dir is any directory holding metrics.json (completed), failed.json (failed) or
variability.json (scan-only, or a run that died after its scan), or a Hydra job dir (.hydra/ or a
checkpoint) with neither metrics.json nor failed.json (incomplete). Every output is written to a
temporary file and moved into place, so a reader never sees a half-written table.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable

from hsv_exp.atomic import write_atomic
from hsv_exp.errors import DataError, HsvError

METRICS, FAILED, VARIABILITY = "metrics.json", "failed.json", "variability.json"
NOT_A_RUN_DIR = {".hydra", "wandb", "__pycache__"}  # never descended into
LEAD_COLUMNS = [
    "status", "task", "model", "tuning", "select", "k", "rule", "seed", "metric", "pooling",
    "head_layer", "tuned_layers", "num_layers", "main_metric", "best_epoch", "best_main",
    "last_epoch", "last_main", "scan_head_layer", "scan_seed", "scan_max_examples", "scan_majority_fraction",
]
TAIL_COLUMNS = ["error", "run_dir"]
# Config keys that may differ between seeds of one condition without making it another condition.
IGNORED_CONFIG_KEYS = ("seed", "tags", "study", "resume", "dry_run", "stage", "logger", "hydra", "paths",
                       "scan.always", "scan.batch_size", "task.glue_dir", "train.device", "train.num_threads",
                       "train.cache_frozen", "train.cache_memory_budget_mb", "train.eval_batch_size")


@dataclass
class Run:
    run_dir: Path
    status: str  # complete | failed | scan-only | incomplete
    info: dict  # metrics.json or failed.json; {} for scan-only and incomplete runs
    scan: dict | None  # variability.json, if the scan finished


@dataclass(frozen=True)
class Curve:
    """One variability scan: nu per layer (layer 0 = embeddings)."""

    task: str
    model: str
    metric: str
    pooling: str
    max_examples: int | None
    majority_fraction: float | None
    seed: Any
    layers: tuple[int, ...]
    scores: tuple[float, ...]

    @property
    def group(self) -> tuple:
        return (self.task, self.model, self.metric, self.pooling, self.layers)

    @property
    def setting(self) -> tuple:
        return (self.max_examples, self.majority_fraction)


@dataclass
class Condition:
    """Completed runs of one task that differ only by seed."""

    task: str
    model: str
    tuning: str
    select: str
    rule: str
    k: str
    runs: list[Run] = field(default_factory=list)

    def label(self) -> str:
        k = "" if self.k == "—" else f" k={self.k}"
        rule = "" if self.rule == "—" else f" {self.rule}"
        return f"{self.model} {self.tuning} {self.select}{rule}{k}"

    def scores(self, which: str) -> list[float]:
        """Main dev metric at the best or last epoch, one per run."""
        return [run.info[which][main_key(run.info)] for run in self.runs]

    def compute_mean(self, key: str) -> float | None:
        values = [run.info["compute"].get(key) for run in self.runs]
        return None if any(v is None for v in values) else statistics.fmean(values)


# ---------------------------------------------------------------- reading run dirs


def find_runs(roots: Iterable[Path]) -> list[Run]:
    roots = [Path(root) for root in roots]
    for root in roots:
        if not root.is_dir():
            raise DataError(f"{root} is not a directory")
    run_dirs = set()
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in NOT_A_RUN_DIR and not d.startswith("checkpoint"))
            if {METRICS, FAILED, VARIABILITY} & set(filenames) or _is_hydra_job(Path(dirpath)):
                run_dirs.add(Path(dirpath))
    runs = [run for run in map(load_run, sorted(run_dirs)) if run is not None]
    if not runs:
        raise DataError(f"no run dirs found under {', '.join(map(str, roots))} "
                        f"(looked for {METRICS}, {FAILED}, {VARIABILITY}, .hydra/ or checkpoint)")
    return runs


def load_run(run_dir: Path) -> Run | None:
    scan = _read_variability(run_dir / VARIABILITY) if (run_dir / VARIABILITY).is_file() else None
    if (run_dir / METRICS).is_file():
        return Run(run_dir, "complete", _read_metrics(run_dir / METRICS), scan)
    if (run_dir / FAILED).is_file():
        return Run(run_dir, "failed", _read_failed(run_dir / FAILED), scan)
    if _hydra_value(run_dir, "dry_run") == "true":
        return None  # a dry run only printed its config
    if scan is not None and (_hydra_value(run_dir, "stage") == "scan" or not _is_hydra_job(run_dir)):
        return Run(run_dir, "scan-only", {}, scan)
    return Run(run_dir, "incomplete", {}, scan)


def _is_hydra_job(path: Path) -> bool:
    return (path / ".hydra").is_dir() or any(p.name.startswith("checkpoint") for p in path.iterdir())


def _hydra_value(run_dir: Path, key: str) -> str | None:
    """A top-level scalar of .hydra/config.yaml (stage, dry_run), read without a YAML parser."""
    try:
        text = (run_dir / ".hydra" / "config.yaml").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s*(\S+)\s*$", text, re.MULTILINE)
    return match.group(1) if match else None


def _read_json(path: Path, required: dict[str, type | tuple[type, ...]]) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: malformed, expected a JSON object, got {type(data).__name__}")
    for key, kind in required.items():
        if key not in data:
            raise DataError(f"{path}: malformed, missing key '{key}'")
        if not isinstance(data[key], kind):
            raise DataError(f"{path}: malformed, '{key}' is {type(data[key]).__name__}")
    return data


def _read_metrics(path: Path) -> dict:
    data = _read_json(path, {"task": str, "model": str, "main_metric": str, "best": dict, "last": dict, "compute": dict})
    key = main_key(data)
    for which in ("best", "last"):
        if not isinstance(data[which].get(key), (int, float)):
            raise DataError(f"{path}: malformed, '{which}' has no number under the main metric '{key}'")
    return data


def _read_failed(path: Path) -> dict:
    return _read_json(path, {"error": str})


def _read_variability(path: Path) -> dict:
    data = _read_json(path, {"task": str, "model": str, "layers": list, "scores": list})
    if len(data["layers"]) != len(data["scores"]) or len(data["layers"]) < 2:
        raise DataError(f"{path}: malformed, 'layers' and 'scores' must have the same length >= 2")
    if not all(isinstance(v, (int, float)) for v in data["layers"] + data["scores"]):
        raise DataError(f"{path}: malformed, 'layers' and 'scores' must hold numbers")
    return data


def main_key(info: dict) -> str:
    """The dev metric a run optimised: optimized_metric, else dev/<main_metric> (MNLI: dev_matched/)."""
    if info.get("optimized_metric"):
        return info["optimized_metric"]
    key = f"dev/{info['main_metric']}"
    matched = f"dev_matched/{info['main_metric']}"
    return matched if key not in info["best"] and matched in info["best"] else key


def head_layer_of(layers: Iterable[int], scores: Iterable[float]) -> int:
    """l*: argmin of nu over layers 1..L (layer 0, the embeddings, never carries the head)."""
    return min((score, layer) for layer, score in zip(layers, scores) if layer >= 1)[1]


# ---------------------------------------------------------------- runs.csv


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
    columns = LEAD_COLUMNS + dynamic + TAIL_COLUMNS

    def write(f: IO) -> None:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)

    write_atomic(path, write)


# ---------------------------------------------------------------- conditions and curves


def conditions(runs: list[Run]) -> list[Condition]:
    """Completed runs grouped by (task, model, tuning, select, rule, k), sorted for the tables.

    Values that do not change what a run does are shown as "—": the rule unless select=variability,
    k for select=all. Non-default scan settings and a manual head layer become part of `select`.
    """
    groups: dict[tuple, Condition] = {}
    for run in runs:
        if run.status != "complete":
            continue
        key = (run.info["task"], *_condition_key(run.info))
        groups.setdefault(key, Condition(*key)).runs.append(run)
    return sorted(groups.values(), key=lambda c: (c.task, c.model, c.tuning, c.select, c.rule, c.k.zfill(4)))


def _condition_key(info: dict) -> tuple[str, str, str, str, str]:
    config = info.get("config") or {}
    select, rule = str(info.get("select")), "—"
    if select == "variability":
        scan = config.get("scan") or {}
        extras = [info[key] for key, default in (("metric", "variability"), ("pooling", "mean"))
                  if info.get(key, default) != default]
        extras += [f"{name}={scan[key]}" for key, name in (("max_examples", "n"), ("majority_fraction", "majority"))
                   if scan.get(key) is not None]
        select += f" ({', '.join(map(str, extras))})" if extras else ""
        rule = str(info.get("rule", "argmin"))
        tolerance = (config.get("select") or {}).get("tolerance")
        rule += f" {tolerance}" if rule == "tolerance" and tolerance is not None else ""
    elif select == "manual":
        select += f" ℓ={info.get('head_layer')}"
    k = "—" if select == "all" else str(info.get("k"))
    return str(info.get("model")), str(info.get("tuning")), select, rule, k


def condition_notes(condition: Condition) -> list[str]:
    """Warnings for a table row: repeated seeds, or configs that differ by more than the seed."""
    notes = []
    seeds = [run.info.get("seed") for run in condition.runs]
    repeated = sorted({str(s) for s in seeds if seeds.count(s) > 1})
    if repeated:
        notes.append(f"seed {', '.join(repeated)} appears more than once")
    flat = [_flatten(run.info.get("config") or {}) for run in condition.runs]
    differing = sorted(key for key in set().union(*flat)
                       if not _ignored(key) and len({json.dumps(f.get(key), sort_keys=True) for f in flat}) > 1)
    if differing:
        notes.append(f"pools runs whose config differs in {', '.join(differing)}")
    return notes


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _ignored(key: str) -> bool:
    return any(key == ignored or key.startswith(ignored + ".") for ignored in IGNORED_CONFIG_KEYS)


def scan_curves(runs: list[Run]) -> list[Curve]:
    """Distinct scans; the same scan copied into several seeds' run dirs counts once."""
    curves = {
        Curve(scan["task"], scan["model"], scan.get("metric", "variability"), scan.get("pooling", "mean"),
              scan.get("max_examples"), scan.get("majority_fraction"), scan.get("scan_seed", scan.get("seed")),
              tuple(scan["layers"]), tuple(scan["scores"]))
        for scan in (run.scan for run in runs) if scan is not None
    }
    return sorted(curves, key=lambda c: (c.group, str(c.setting), str(c.seed), c.scores))


def mean_curves(curves: list[Curve]) -> dict[tuple, dict[tuple, list[Curve]]]:
    """group (task, model, metric, pooling, layers) -> setting (max_examples, majority) -> scans."""
    grouped: dict[tuple, dict[tuple, list[Curve]]] = defaultdict(lambda: defaultdict(list))
    for curve in curves:
        grouped[curve.group][curve.setting].append(curve)
    return grouped


def mean_scores(curves: list[Curve]) -> list[float]:
    return [statistics.fmean(values) for values in zip(*(c.scores for c in curves))]


def setting_label(setting: tuple) -> str:
    max_examples, majority = setting
    return (f"{'all examples' if max_examples is None else f'{max_examples} examples'}, "
            f"{'natural classes' if majority is None else f'majority {majority}'}")


def robustness_tasks(curves: list[Curve]) -> list[str]:
    settings = defaultdict(set)
    for curve in curves:
        settings[curve.task].add(curve.setting)
    return sorted(task for task, found in settings.items() if len(found) > 1)


# ---------------------------------------------------------------- markdown


def mean_std(values: list[float], scale: float = 100.0) -> str:
    mean = statistics.fmean(values) * scale
    std = "—" if len(values) < 2 else f"{statistics.stdev(values) * scale:.2f}"
    return f"{mean:.2f} ± {std}"


def summary_markdown(runs: list[Run], command: str, notes: str | None = None) -> str:
    from hsv_exp.results_claims import claims_markdown

    counts = {status: sum(run.status == status for run in runs) for status in ("complete", "failed", "scan-only", "incomplete")}
    lines = ["# Summary", "", f"Generated by `{command}` from {len(runs)} run dirs: "
             + ", ".join(f"{n} {status}" for status, n in counts.items()) + ".", "",
             "Scores are the main dev metric ×100, mean ± sample std over seeds (— with one seed); "
             "FLOPs are % of full fine-tuning; ℓ* is the layer the classifier reads; `reused` counts runs whose "
             "layers, data and seed equal an already completed run of the sweep, which reuse its results "
             "(`reuse_equivalent_runs`) instead of training the same model again.", ""]
    if notes:
        lines += [notes.strip(), ""]
    by_task = defaultdict(list)
    for condition in conditions(runs):
        by_task[condition.task].append(condition)
    curves_by_task = defaultdict(list)
    for curve in scan_curves(runs):
        curves_by_task[curve.task].append(curve)
    for task in sorted(set(by_task) | set(curves_by_task)):
        lines += [f"## {task}", ""] + _condition_table(by_task[task]) + _scan_lines(curves_by_task[task])
    lines += claims_markdown(runs)
    lines += _run_list("Failed runs", [run for run in runs if run.status == "failed"], with_error=True)
    lines += _run_list("Incomplete runs", [run for run in runs if run.status == "incomplete"], with_error=False)
    return "\n".join(lines)


def _condition_table(conds: list[Condition]) -> list[str]:
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
                 mean_std(c.scores("best")), mean_std(c.scores("last")), _fmt(params, "{:,.0f}"),
                 _fmt(train, "{:.1%}"), _fmt(infer, "{:.1%}"), _fmt(time_s, "{:.1f}")]
        lines.append("| " + " | ".join(cells) + " |")
        notes += [f"- {c.label()}: {note}" for note in condition_notes(c)]
    return lines + [""] + (notes + [""] if notes else [])


def _scan_lines(curves: list[Curve]) -> list[str]:
    from hsv_exp.results_claims import TOLERANCES, tolerance_head

    lines = []
    for (task, model, metric, pooling, layers), settings in sorted(mean_curves(curves).items()):
        for setting, scans in sorted(settings.items(), key=lambda item: str(item[0])):
            scores = mean_scores(scans)
            head = head_layer_of(layers, scores)
            within = ", ".join(f"{tolerance_head(list(layers), scores, t)} within {t:.0%}" for t in TOLERANCES)
            lines.append(f"- scan {model} ({metric}, {pooling} pooling; {setting_label(setting)}): "
                         f"ℓ* = {head} of L = {max(layers)} by argmin; by the tolerance rule {within} of the minimum "
                         f"({len(scans)} scan{'s' * (len(scans) > 1)}); ν = {', '.join(f'{v:.3g}' for v in scores)}")
    return lines + [""] if lines else []


def _run_list(title: str, runs: list[Run], with_error: bool) -> list[str]:
    lines = [f"## {title}", ""]
    for run in runs:
        info = run.info or run.scan or {}
        what = " ".join(f"{key}={info[key]}" for key in ("task", "model", "tuning", "select", "k", "seed") if key in info)
        error = f": {run.info['error'].splitlines()[0] if run.info['error'] else ''}" if with_error else ""
        lines.append(f"- `{run.run_dir}` {what}{error}")
    return lines + (["None."] if not runs else []) + [""]


def _fmt(value: float | None, pattern: str) -> str:
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
                cells = [model, f"{metric} ({pooling})", _fmt(max_examples, "{}"), _fmt(majority, "{}"),
                         str(len(scans)), ", ".join(str(head_layer_of(layers, c.scores)) for c in scans),
                         str(head_layer_of(layers, mean)), ", ".join(f"{v:.3g}" for v in mean)]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- writing


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text if text.endswith("\n") else text + "\n"))


def write_figure(path: Path, figure) -> None:
    write_atomic(path, lambda f: figure.savefig(f, format="png", dpi=130), binary=True)


def aggregate(dirs: Iterable[Path], out: Path, command: str | None = None, notes: Path | None = None) -> tuple[list[Run], list[Path]]:
    """Read every run under `dirs`, write the study's files into `out`; returns (runs, files written)."""
    from hsv_exp import results_plots  # matplotlib is only needed once there is something to draw
    from hsv_exp.results_claims import headline_markdown

    dirs = [Path(d) for d in dirs]
    runs = find_runs(dirs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    command = command or (f"python -m hsv_exp.results {' '.join(map(str, dirs))} --out {out}"
                          + (f" --notes {notes}" if notes else ""))
    try:
        notes_text = Path(notes).read_text() if notes else None
    except OSError as exc:
        raise DataError(f"--notes {notes}: cannot read ({exc.strerror})") from exc
    curves, conds = scan_curves(runs), conditions(runs)
    robust = robustness_tasks(curves)
    outputs: dict[str, Callable[[Path], None] | None] = {
        "runs.csv": lambda p: write_csv(runs, p),
        "headline.md": (lambda p: write_text(p, headline_markdown(runs))) if any(
            c.select == "variability" for c in conds) else None,
        "summary.md": lambda p: write_text(p, summary_markdown(runs, command, notes_text)),
        "variability.png": (lambda p: write_figure(p, results_plots.variability_figure(curves))) if curves else None,
        "score_vs_compute.png": (lambda p: write_figure(p, results_plots.score_vs_compute_figure(conds))) if conds else None,
        "robustness.md": (lambda p: write_text(p, robustness_markdown(curves, robust))) if robust else None,
        "robustness.png": (lambda p: write_figure(p, results_plots.robustness_figure(curves, robust))) if robust else None,
    }
    written = []
    for name, write in outputs.items():
        if write is not None:
            write(out / name)
            written.append(out / name)
        else:
            (out / name).unlink(missing_ok=True)  # a stale file from an earlier aggregation would mislead
    return runs, written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hsv_exp.results", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="folders searched recursively for run dirs")
    parser.add_argument("--out", required=True, type=Path, help="study folder, e.g. results/<study>")
    parser.add_argument("--notes", type=Path, help="a hand-written markdown file put at the top of summary.md "
                        "(the study's findings, citing the generated tables)")
    args = parser.parse_args(argv)
    try:
        runs, written = aggregate(args.dirs, args.out, notes=args.notes)
    except HsvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{sum(r.status == s for r in runs)} {s}" for s in ("complete", "failed", "scan-only", "incomplete"))
    print(f"{len(runs)} run dirs ({counts}) -> {', '.join(map(str, written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
