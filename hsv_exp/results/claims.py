"""The numbers behind the paper's three claims, from a study's completed runs.

1. variability-k vs top-k: the same method and k, paired by seed.
2. variability-k vs the whole model (select=all) tuned with the same method.
3. the scan's cost next to training's, and where the tolerance rule would put the head.

Only tables of measured numbers: whether a claim holds is for the reader (and the study's notes).
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from hsv_exp.results.runs import Condition, Run, conditions, head_layer_of, main_key
from hsv_exp.results.tables import TOLERANCES, mean_std


def paired_runs(a: Condition, b: Condition) -> list[tuple[Run, Run]]:
    """(a's run, b's run) for each seed both conditions have, in seed order: the pairing of every claim."""
    ra, rb = ({run.info.get("seed"): run for run in c.runs} for c in (a, b))
    return [(ra[seed], rb[seed]) for seed in sorted(set(ra) & set(rb), key=str)]


def score(run: Run, which: str = "best") -> float:
    """The run's main dev metric ×100 at the best or the last epoch."""
    return 100 * run.info[which][main_key(run.info)]


def paired_delta(a: Condition, b: Condition, which: str = "best") -> tuple[list[float], int, int]:
    """(a - b per shared seed, a wins, b wins), scores x100 at the best or the last epoch."""
    deltas = [score(ra, which) - score(rb, which) for ra, rb in paired_runs(a, b)]
    return deltas, sum(d > 0 for d in deltas), sum(d < 0 for d in deltas)


def delta_cell(deltas: list[float]) -> str:
    if not deltas:
        return "—"
    mean = statistics.fmean(deltas)
    std = f" ± {statistics.stdev(deltas):.2f}" if len(deltas) > 1 else ""
    return f"{mean:+.2f}{std}"


def layers_label(condition: Condition) -> str:
    found = sorted({(run.info.get("head_layer"), tuple(run.info.get("tuned_layers") or ())) for run in condition.runs})
    return "; ".join(f"{head} ({','.join(map(str, tuned))})" for head, tuned in found)


def _fraction(condition: Condition) -> str:
    value = condition.compute_mean("train_flops_fraction")
    return "—" if value is None else f"{value:.1%}"


def _index(conds: list[Condition]) -> dict[tuple, Condition]:
    """(task, model, tuning, select, rule, k) -> condition."""
    return {(c.task, c.model, c.tuning, c.select, c.rule, c.k): c for c in conds}


def claims_markdown(runs: list[Run]) -> list[str]:
    """The claims section of summary.md, one table per claim; nothing without variability runs."""
    conds = conditions(runs)
    index = _index(conds)
    if not any(c.select == "variability" for c in conds):
        return []
    lines = ["## The paper's claims: measured numbers", "",
             "Δ = paired difference of best-epoch dev scores ×100 over the seeds both conditions share "
             "(mean ± std); wins = seeds where the first condition scores higher. A variability run whose "
             "layers equal the top-k run's is the same model trained on the same data and seed (see "
             "`reused` in the tables above), so its Δ is 0 by construction.", ""]
    return lines + _claim1(conds, index) + _claim2(conds, index) + _claim3(runs, index) + [""]


def _claim1(conds: list[Condition], index: dict[tuple, Condition]) -> list[str]:
    """variability-k vs top-k with the same method and k, paired by seed."""
    lines: list[str] = []
    lines += ["### Claim 1: tuning the k layers below ℓ* beats tuning the top k layers", "",
              "| task | model | tuning | rule | k | variability head (tuned) | variability | top | Δ var − top | wins var/top "
              "| train FLOPs var / top |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    differ = defaultdict(list)
    for c in sorted(conds, key=lambda c: (c.task, c.model, c.tuning, c.rule, c.k)):
        top = index.get((c.task, c.model, c.tuning, "top", "—", c.k))
        if c.select != "variability" or top is None:
            continue
        deltas, wins, losses = paired_delta(c, top)
        same = layers_label(c) == layers_label(top)
        if not same:
            differ[c.task, c.rule].append(statistics.fmean(deltas) if deltas else 0.0)
        lines.append(f"| {c.task} | {c.model} | {c.tuning} | {c.rule} | {c.k} | {layers_label(c)}{' = top' if same else ''} "
                     f"| {mean_std(c.scores('best'))} | {mean_std(top.scores('best'))} | {delta_cell(deltas)} "
                     f"| {wins}/{losses} | {_fraction(c)} / {_fraction(top)} |")
    lines += [""]
    if differ:
        lines += ["Where variability picked other layers than top: " + "; ".join(
            f"{task} ({rule}): mean Δ {statistics.fmean(values):+.2f} over {len(values)} (tuning, k) cells, var higher in "
            f"{sum(v > 0 for v in values)}" for (task, rule), values in sorted(differ.items())) + ".", ""]
    else:
        lines += ["Variability picked the top layer for every task here: claim 1 is not tested by these runs.", ""]
    return lines


def _claim2(conds: list[Condition], index: dict[tuple, Condition]) -> list[str]:
    """The best variability-k (k = 1..3) vs the whole model tuned with the same method."""
    lines: list[str] = []
    lines += ["### Claim 2: it matches tuning the whole model with the same method", "",
              "| task | model | tuning | rule | whole model | variability k=1 | k=2 | k=3 | Δ best var − whole | train FLOPs of that var |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    rules = sorted({c.rule for c in conds if c.select == "variability"})
    for c in sorted(conds, key=lambda c: (c.task, c.model, c.tuning)):
        if c.select != "all":
            continue
        for rule in rules:
            variants = [index.get((c.task, c.model, c.tuning, "variability", rule, str(k))) for k in (1, 2, 3)]
            found = [v for v in variants if v is not None]
            if not found:
                continue
            best = max(found, key=lambda v: statistics.fmean(v.scores("best")))
            deltas, _, _ = paired_delta(best, c)
            cells = [mean_std(v.scores("best")) if v is not None else "—" for v in variants]
            lines.append(f"| {c.task} | {c.model} | {c.tuning} | {rule} | {mean_std(c.scores('best'))} | {' | '.join(cells)} "
                         f"| {delta_cell(deltas)} (k={best.k}) | {_fraction(best)} |")
    lines += [""]
    return lines


def _claim3(runs: list[Run], index: dict[tuple, Condition]) -> list[str]:
    """The scan's cost per example next to a whole-model full fine-tuning epoch, and the tolerance rule's l*."""
    lines: list[str] = []
    lines += ["### Claim 3: the metric needs no training and is cheap", "",
              "The scan is one forward pass over the train split, run once per task and cached; ratio = how many "
              "times longer one epoch of whole-model full fine-tuning takes than scanning, per example. ℓ* under the "
              "tolerance rule (`select.rule=tolerance`): the earliest layer within the given fraction of the "
              "minimum ν, i.e. how much earlier the head could sit at nearly the same variability.", "",
              "| task | model | scanned examples | scan time (s) | scan s per 1k examples | whole-model full FT s per 1k "
              "examples per epoch | ratio | ℓ* argmin " + "".join(f"| ℓ* within {t:.0%} " for t in TOLERANCES) + "|",
              "|---|---|---|---|---|---|---|---|" + "---|" * len(TOLERANCES)]
    scans = {}
    for run in runs:
        if run.scan is not None and run.info.get("select") == "variability":
            scans.setdefault((run.scan["task"], run.scan["model"]), run.scan)
    for (task, model), scan in sorted(scans.items()):
        full = index.get((task, model, "full", "all", "—", "—"))
        scan_rate = scan["scan_seconds"] / scan["num_examples"] * 1000 if scan.get("scan_seconds") and scan.get("num_examples") else None
        train_rate = None
        if full is not None:
            rates = [run.info["compute"]["train_time_s"] / (run.info["num_train_examples"] / 1000 * len(run.info["history"]))
                     for run in full.runs if run.info.get("num_train_examples") and run.info.get("history")
                     and "train_time_s" in run.info["compute"]]
            train_rate = statistics.fmean(rates) if rates else None
        ratio = f"{train_rate / scan_rate:.1f}×" if scan_rate and train_rate else "—"
        heads = [head_layer_of(scan["layers"], scan["scores"], "tolerance", t) for t in TOLERANCES]
        lines.append(f"| {task} | {model} | {scan.get('num_examples', '—')} | {scan.get('scan_seconds', float('nan')):.1f} "
                     f"| {'—' if scan_rate is None else f'{scan_rate:.1f}'} | {'—' if train_rate is None else f'{train_rate:.1f}'} "
                     f"| {ratio} | {head_layer_of(scan['layers'], scan['scores'])} | " + " | ".join(map(str, heads)) + " |")
    return lines


def headline_markdown(runs: list[Run], k: str = "2") -> str:
    """One row per (task, method): the whole model, top-k and variability-k (argmin and tolerance),
    best-epoch dev score x100 (mean ± std over seeds), and the training FLOPs of each reduced model."""
    conds = conditions(runs)
    index = _index(conds)
    variability_rules = sorted({c.rule for c in conds if c.select == "variability"})
    columns = [("all", "—", "—", "whole model")] + [("top", "—", k, f"top k={k}")] + [
        ("variability", rule, k, f"variability k={k} ({rule})") for rule in variability_rules]
    lines = ["| task | model | tuning | ℓ* | " + " | ".join(title for *_, title in columns) + " | train FLOPs % (reduced) |",
             "|---|---|---|---|" + "---|" * len(columns) + "---|"]
    for task, model, tuning in sorted({(c.task, c.model, c.tuning) for c in conds}):
        cells = [index.get((task, model, tuning, select, rule, kk)) for select, rule, kk, _ in columns]
        heads = sorted({str(run.info.get("head_layer")) for c in cells[2:] if c is not None for run in c.runs})
        scores = [mean_std(c.scores("best")) if c is not None else "—" for c in cells]
        flops = " / ".join(_fraction(c) if c is not None else "—" for c in cells[1:])
        lines.append(f"| {task} | {model} | {tuning} | {', '.join(heads) or '—'} | {' | '.join(scores)} | {flops} |")
    return "\n".join(lines) + "\n"
