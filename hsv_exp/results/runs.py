"""Reading run dirs: what a study's runs are, grouped into conditions and scan curves.

A run dir is any directory holding metrics.json (completed), failed.json (failed) or
variability.json (scan-only, or a run that died after its scan), or a Hydra job dir (.hydra/ or a
checkpoint) with neither metrics.json nor failed.json (incomplete).
"""

from __future__ import annotations

import json
import os
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from hsv_exp.config import EXECUTION, NOT_SEMANTIC, keys_marked
from hsv_exp.errors import DataError
from hsv_exp.run_dir import STAGE1_DIR
from hsv_exp.selection import pick_head_layer

METRICS, FAILED, VARIABILITY = "metrics.json", "failed.json", "variability.json"
NOT_A_RUN_DIR = {".hydra", "wandb", "__pycache__", STAGE1_DIR}  # never descended into
# Config keys that may differ between seeds of one condition without making it another condition:
# the schema's NOT_SEMANTIC and EXECUTION keys, the seed (what a condition pools over), the stage
# (stage=train after a separate stage=scan trains what stage=all trains), and Hydra's own config.
IGNORED_CONFIG_KEYS = ("seed", "stage", "hydra") + keys_marked(NOT_SEMANTIC) + keys_marked(EXECUTION)


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
    if data["layers"] != list(range(len(data["layers"]))):
        raise DataError(f"{path}: malformed, 'layers' must be 0..L (0 = embeddings)")
    return data


def main_key(info: dict) -> str:
    """The dev metric a run optimised: optimized_metric, else dev/<main_metric> (MNLI: dev_matched/)."""
    if info.get("optimized_metric"):
        return info["optimized_metric"]
    key = f"dev/{info['main_metric']}"
    matched = f"dev_matched/{info['main_metric']}"
    return matched if key not in info["best"] and matched in info["best"] else key


def head_layer_of(layers: Iterable[int], scores: Iterable[float], rule: str = "argmin", tolerance: float = 0.0) -> int:
    """l* of one scan by hsv_exp.selection's rule (argmin over layers 1..L, or the tolerance rule)."""
    layers, scores = list(layers), list(scores)
    if layers != list(range(len(scores))):
        raise DataError(f"scan layers {layers} are not 0..L for {len(scores)} scores")
    return pick_head_layer(scores, rule, tolerance)


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
        extras += ["distinct classes"] if (config.get("task") or {}).get("regression_classes", "round") != "round" else []
        select += f" ({', '.join(map(str, extras))})" if extras else ""
        rule = str(info.get("rule", "argmin"))
        tolerance = (config.get("select") or {}).get("tolerance")
        rule += f" {tolerance}" if rule == "tolerance" and tolerance is not None else ""
    elif select == "manual":
        select += f" ℓ={info.get('head_layer')}"
        last_tuned = (config.get("select") or {}).get("last_tuned_layer")
        select += f" window to {last_tuned}" if last_tuned is not None else ""
    k = "—" if select == "all" else str(info.get("k"))
    head = (config.get("model") or {}).get("head", "linear")  # model.head; runs before it had the linear head
    return str(info.get("model")) + ("" if head == "linear" else f" ({head} head)"), str(info.get("tuning")), select, rule, k


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
