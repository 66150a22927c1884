"""The low-resource study (sweeps/lowres.yaml, issue 11): run dirs -> runs.csv, paired.csv, tables.md, score_vs_n.png.

A cell is (task, model, tuning, N, selection, strategy) pooled over seeds: N = task.max_train_examples,
selection = the whole model or the window (select, rule, k), strategy = how the head starts and what
regularizes training (plain, ehft, lpft, mvcr, ehft+mvcr, from head_init= and regularizer=). The
claims are paired differences against the plain strategy of the same (task, N, selection), by seed;
paired.csv holds each pair (the score differences and the cost ratios), tables.md their means and medians.
summary.md (the findings) is written by hand from tables.md; this module never writes it.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

import yaml

from hsv_exp.atomic import write_csv, write_figure, write_text
from hsv_exp.precision import machine_label
from hsv_exp.results.claims import delta_cell, layers_label, paired_delta, paired_runs, score
from hsv_exp.results.plots import grid
from hsv_exp.results.outputs import read_runs, write_outputs
from hsv_exp.results.runs import Condition, Run, condition_notes, main_key
from hsv_exp.results.tables import fmt, mean_std, run_list

WHOLE = "whole model"
BASELINE = "plain"
STRATEGY_ORDER = ("plain", "ehft", "lpft", "mvcr", "ehft+mvcr")
# (strategy, its name, what BASELINE stands for beside it): each claim is the strategy − BASELINE, paired by seed.
CLAIMS = (("ehft", "EH-FT (BitFit-trained head)", "plain fine-tuning (random head)"),
          ("lpft", "LP-FT (probe-trained head)", "plain fine-tuning (random head)"),
          ("mvcr", "MVCR", "plain fine-tuning"),
          ("ehft+mvcr", "EH-FT + MVCR", "plain fine-tuning"))
CSV_COLUMNS = ["status", "task", "model", "tuning", "N", "num_train_examples", "seed", "selection", "strategy",
               "head_layer", "window", "epochs", "main_metric", "best_epoch", "best_main", "last_main", "train_flops",
               "train_flops_fraction", "train_time_s", "train_wall_s", "reused_from", "error", "run_dir"]
PAIRED_COLUMNS = ["task", "model", "tuning", "N", "selection", "strategy", "seed", "best_delta", "last_delta",
                  "train_flops_ratio", "train_time_ratio"]


@dataclass(frozen=True, order=True)
class Cell:
    task: str
    model: str
    tuning: str
    n: int  # task.max_train_examples; 0 = the whole train split
    selection: str
    strategy: str

    def label(self) -> str:
        return f"{self.task} N={n_label(self.n)} {self.selection} {self.strategy} ({self.model}, {self.tuning})"


def n_label(n: int) -> str:
    return "all" if n == 0 else str(n)


# ---------------------------------------------------------------- one run


def run_config(run: Run) -> dict:
    """The run's composed config: metrics.json/failed.json's, else the Hydra job's (incomplete runs)."""
    if run.info.get("config"):
        return run.info["config"]
    try:
        return yaml.safe_load((run.run_dir / ".hydra" / "config.yaml").read_text()) or {}
    except OSError:
        return {}


def strategy_of(config: dict) -> str:
    """plain | ehft | lpft | mvcr | ehft+mvcr (a non-BitFit EH-FT is named by its method: ehft-lora)."""
    head_init, regularizer = config.get("head_init") or {}, config.get("regularizer") or {}
    parts = []
    head = head_init.get("name", "random")
    if head != "random":
        method = head_init.get("method", "bitfit")
        parts.append(head if head != "ehft" or method == "bitfit" else f"ehft-{method}")
    if regularizer.get("name", "none") != "none":
        parts.append(regularizer["name"])
    return "+".join(parts) or BASELINE


def selection_of(config: dict) -> str:
    select = config.get("select") or {}
    name = select.get("name")
    if name == "all":
        return WHOLE
    rule = f" {select.get('rule')}" if name == "variability" else ""
    return f"{name}{rule} k={select.get('k')}"


def cell_of(run: Run) -> Cell | None:
    """None when the run's config is unknown (a dir without config, e.g. a bare checkpoint)."""
    config = run_config(run)
    if not config.get("task"):
        return None
    return Cell(config["task"]["name"], (config.get("model") or {}).get("name", "?"), (config.get("tuning") or {}).get("name", "?"),
                config["task"].get("max_train_examples") or 0, selection_of(config), strategy_of(config))


def train_flops(info: dict) -> float:
    """Training FLOPs of a completed run, from its per-token accounting: the first epoch runs the
    frozen prefix, later ones read its cache (when on). With head_init the per-token figures are
    already the mean over both stages' epochs (stage 1 included); MVCR's HAEs are in them, its
    AE-only epochs priced as joint ones (an upper bound: they skip the task backward)."""
    compute, epochs = info["compute"], len(info["history"])
    tokens = compute["mean_seq_len"] * info["num_train_examples"]
    cached = ((info.get("config") or {}).get("train") or {}).get("cache_frozen", "auto") != "off"
    later = compute["train_flops_per_token_cached" if cached else "train_flops_per_token"]
    return tokens * (compute["train_flops_per_token"] + (epochs - 1) * later)


def csv_row(run: Run) -> dict:
    cell, info, config = cell_of(run), run.info, run_config(run)
    row = {"status": run.status, "run_dir": str(run.run_dir), "error": info.get("error"), "seed": config.get("seed"),
           "epochs": (config.get("train") or {}).get("epochs")}
    if cell is not None:
        row.update(task=cell.task, model=cell.model, tuning=cell.tuning, N=n_label(cell.n), selection=cell.selection,
                   strategy=cell.strategy)
    if run.status == "complete":
        key = main_key(info)
        compute = info["compute"]
        row.update(num_train_examples=info.get("num_train_examples"), head_layer=info.get("head_layer"),
                   window=" ".join(map(str, info.get("tuned_layers") or ())), main_metric=key,
                   best_epoch=info["best"].get("epoch"), best_main=info["best"][key], last_main=info["last"][key],
                   train_flops=train_flops(info), train_flops_fraction=compute.get("train_flops_fraction"),
                   train_time_s=compute.get("train_time_s"), train_wall_s=compute.get("train_wall_s"),
                   reused_from=info.get("reused_from"))
    return row


# ---------------------------------------------------------------- cells


def cells(runs: list[Run]) -> dict[Cell, Condition]:
    """Completed runs by cell, as results.runs Conditions (their scores, compute means and notes)."""
    found: dict[Cell, Condition] = {}
    for run in runs:
        cell = cell_of(run) if run.status == "complete" else None
        if cell is not None:
            found.setdefault(cell, Condition(cell.task, cell.model, cell.tuning, cell.selection, "—", "—")).runs.append(run)
    return dict(sorted(found.items(), key=lambda item: _order(item[0])))


def _strategy_rank(strategy: str) -> tuple:
    return STRATEGY_ORDER.index(strategy) if strategy in STRATEGY_ORDER else len(STRATEGY_ORDER), strategy


def _order(cell: Cell) -> tuple:
    return cell.task, cell.model, cell.tuning, cell.n, cell.selection != WHOLE, cell.selection, _strategy_rank(cell.strategy)


def _mean(values: Iterable[float | None]) -> float | None:
    values = list(values)
    return None if not values or any(v is None for v in values) else statistics.fmean(values)


def score_table(found: dict[Cell, Condition]) -> list[str]:
    lines, notes = [], []
    by_group = defaultdict(list)
    for cell, condition in found.items():
        by_group[cell.task, cell.model, cell.tuning].append((cell, condition))
    for (task, model, tuning), members in by_group.items():
        keys = sorted({main_key(run.info) for _, c in members for run in c.runs})
        lines += [f"### {task} ({model}, tuning={tuning}; {', '.join(f'`{k}`' for k in keys)})", "",
                  "| N | selection | strategy | ℓ* (tuned) | n seeds | best-epoch score | last-epoch score | best epoch "
                  "| epochs | train TFLOPs | train FLOPs % | train time (s) | train + eval wall (s) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for cell, c in members:
            epochs = sorted({str(run.info["config"].get("train", {}).get("epochs")) for run in c.runs})
            flops = _mean(train_flops(run.info) for run in c.runs)
            cells_ = [n_label(cell.n), cell.selection, cell.strategy, layers_label(c), str(len(c.runs)),
                      mean_std(c.scores("best")), mean_std(c.scores("last")),
                      fmt(_mean(run.info["best"].get("epoch") for run in c.runs), "{:.1f}"), ", ".join(epochs),
                      fmt(None if flops is None else flops / 1e12, "{:.1f}"), fmt(c.compute_mean("train_flops_fraction"), "{:.1%}"),
                      fmt(c.compute_mean("train_time_s"), "{:.1f}"), fmt(c.compute_mean("train_wall_s"), "{:.1f}")]
            lines.append("| " + " | ".join(cells_) + " |")
            notes += [f"- {cell.label()}: {note}" for note in condition_notes(c)]
        lines.append("")
    return lines + (notes + [""] if notes else [])


def claim_tables(found: dict[Cell, Condition]) -> list[str]:
    """One table per claim: Δ = strategy − plain, ×100, paired by seed, per (task, N) and selection,
    at the best dev epoch (the protocol) and at the last (what a best-epoch pick on a small dev set hides)."""
    selections = sorted({cell.selection for cell in found}, key=lambda s: (s != WHOLE, s))
    columns = [(selection, which) for selection in selections for which in ("best", "last")]
    lines = ["## Claims: paired differences against plain fine-tuning", "",
             "Δ = score of the strategy − that of plain fine-tuning (random head, no regularizer) on the same task, "
             "N, selection and seed, ×100, at the best dev epoch (the study's protocol, as MVCR's authors report) and "
             "at the last epoch: mean ± std over the seeds both have, (wins/losses) = seeds where the strategy scores "
             "higher/lower. A best-epoch Δ far from the last-epoch Δ means one condition's best epoch was a lucky "
             "evaluation on a small dev set. `mean over tasks` weighs each task equally (the EH-FT authors report "
             "+0.9 on average over their tasks, most on the small ones). \"Where it does not help\" reads the "
             "best-epoch Δ.", ""]
    for strategy, name, against in CLAIMS:
        rows, does_not_help = [], []
        per_n = defaultdict(lambda: defaultdict(list))  # (selection, which) -> N -> per-task mean delta
        overall = defaultdict(list)
        groups = sorted({(c.task, c.model, c.tuning, c.n) for c in found if c.strategy == strategy})
        for task, model, tuning, n in groups:
            cells_ = [task, n_label(n)]
            for selection, which in columns:
                ours = found.get(Cell(task, model, tuning, n, selection, strategy))
                base = found.get(Cell(task, model, tuning, n, selection, BASELINE))
                deltas, wins, losses = paired_delta(ours, base, which) if ours is not None and base is not None else ([], 0, 0)
                cells_.append(f"{delta_cell(deltas)} ({wins}/{losses})" if deltas else "—")
                if deltas:
                    mean = statistics.fmean(deltas)
                    per_n[selection, which][n].append(mean)
                    overall[selection, which].append(mean)
                    if mean <= 0 and which == "best":
                        does_not_help.append(f"{task} N={n_label(n)} {selection} ({mean:+.2f})")
            rows.append("| " + " | ".join(cells_) + " |")
        if not rows:
            continue
        lines += [f"### {name} − {against}", "", "| task | N | " + " | ".join(f"Δ {s}, {w} epoch (wins/losses)" for s, w in columns) + " |",
                  "|---|---|" + "---|" * len(columns)] + rows
        for n in sorted({n for by_n in per_n.values() for n in by_n}):
            lines.append(f"| mean over tasks | {n_label(n)} | " + " | ".join(
                _mean_cell(per_n[column].get(n, []), "task") for column in columns) + " |")
        lines.append("| mean over tasks and N | every N | " + " | ".join(_mean_cell(overall[c], "cell") for c in columns) + " |")
        lines += ["", "Where it does not help (best-epoch mean Δ ≤ 0): " + ("; ".join(does_not_help) or "nowhere") + ".", ""]
    return lines


def pairs(found: dict[Cell, Condition]) -> Iterable[tuple[Cell, Run, Run]]:
    """(cell, its run, the plain run of the same task, N, selection and seed) for every non-plain run that has one."""
    for cell, condition in found.items():
        base = found.get(replace(cell, strategy=BASELINE))
        if cell.strategy != BASELINE and base is not None:
            for ours, plain in paired_runs(condition, base):
                yield cell, ours, plain


def _ratio(ours: float | None, plain: float | None) -> float | None:
    return ours / plain if ours and plain else None


def cost_ratios(ours: Run, plain: Run) -> tuple[float | None, float | None]:
    """(training FLOPs, optimizer time) of a run over its plain pair's. No time ratio where the two ran
    on different CPU models or precisions (`machine_label`): a resumed sweep may pair a bf16 run with
    an fp32 one, and their seconds are not comparable."""
    ours_compute, plain_compute = ours.info["compute"], plain.info["compute"]
    same_machine = machine_label(ours_compute.get("precision", {})) == machine_label(plain_compute.get("precision", {}))
    return (_ratio(train_flops(ours.info), train_flops(plain.info)),
            _ratio(ours_compute.get("train_time_s"), plain_compute.get("train_time_s")) if same_machine else None)


def pair_row(cell: Cell, ours: Run, plain: Run) -> dict:
    flops_ratio, time_ratio = cost_ratios(ours, plain)
    return dict(task=cell.task, model=cell.model, tuning=cell.tuning, N=n_label(cell.n), selection=cell.selection,
                strategy=cell.strategy, seed=ours.info.get("seed"),
                best_delta=score(ours, "best") - score(plain, "best"), last_delta=score(ours, "last") - score(plain, "last"),
                train_flops_ratio=flops_ratio, train_time_ratio=time_ratio)


def cost_tables(found: dict[Cell, Condition]) -> list[str]:
    """Per strategy, (task, N) and selection: the median over seeds of its training FLOPs and optimizer
    time over plain's on the same seed. A median, as one run slowed by a busy machine would move a mean."""
    ratios = defaultdict(lambda: ([], []))  # cell -> (FLOPs ratios, time ratios), one per paired seed
    for cell, ours, plain in pairs(found):
        for values, ratio in zip(ratios[cell], cost_ratios(ours, plain)):
            if ratio is not None:
                values.append(ratio)
    selections = sorted({cell.selection for cell in found}, key=lambda s: (s != WHOLE, s))
    lines = ["## Cost against plain fine-tuning", "",
             "Per cell, the median over seeds of the strategy's training FLOPs (both stages, MVCR's autoencoders "
             "included) and optimizer time (`train_time_s`) over plain fine-tuning's on the same task, N, selection "
             "and seed: FLOPs× / time× (seeds). A median, since one run slowed by a busy machine would move a mean; "
             "no time ratio pairs runs on different CPU models or precisions; "
             "`paired.csv` has every seed's ratios.", ""]
    for strategy, name, _ in CLAIMS:
        groups = sorted({(c.task, c.model, c.tuning, c.n) for c in ratios if c.strategy == strategy})
        if not groups:
            continue
        medians = defaultdict(lambda: ([], []))  # selection -> (FLOPs medians, time medians) over cells
        rows = []
        for task, model, tuning, n in groups:
            cells_ = [task, n_label(n)]
            for selection in selections:
                flops, time = ratios.get(Cell(task, model, tuning, n, selection, strategy), ([], []))
                for column, values in zip(medians[selection], (flops, time)):
                    if values:
                        column.append(statistics.median(values))
                cells_.append(f"{_times(flops)} / {_times(time)} ({max(len(flops), len(time))})" if flops or time else "—")
            rows.append("| " + " | ".join(cells_) + " |")
        lines += [f"### {name}", "", "| task | N | " + " | ".join(selections) + " |",
                  "|---|---|" + "---|" * len(selections)] + rows
        lines.append("| range over cells | every N | " + " | ".join(
            f"{_span(medians[s][0])} / {_span(medians[s][1])}" if medians[s][0] or medians[s][1] else "—"
            for s in selections) + " |")
        lines.append("")
    return lines


def _times(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}×" if values else "—"


def _span(medians: list[float]) -> str:
    return f"{min(medians):.2f}–{max(medians):.2f}×" if medians else "—"


def _mean_cell(means: list[float], noun: str) -> str:
    return f"{statistics.fmean(means):+.2f} over {len(means)} {noun}{'s' * (len(means) != 1)}" if means else "—"


def missing_lines(runs: list[Run]) -> list[str]:
    """Cells short of seeds: expected = every combination of the tasks, N, selections, strategies and
    seeds seen in any run dir (complete, failed or incomplete) of each (model, tuning)."""
    known = [(cell, run_config(run).get("seed"), run.status) for run in runs if (cell := cell_of(run)) is not None]
    status = defaultdict(set)
    for cell, seed, state in known:
        status[cell, seed].add(state)
    short_cells = []
    for model, tuning in sorted({(c.model, c.tuning) for c, _, _ in known}):
        mine = [(c, s) for c, s, _ in known if (c.model, c.tuning) == (model, tuning)]
        axes = [sorted({getattr(c, name) for c, _ in mine}) for name in ("task", "n", "selection", "strategy")]
        seeds = sorted({s for _, s in mine}, key=str)
        for task, n, selection, strategy in itertools.product(*axes):
            cell = Cell(task, model, tuning, n, selection, strategy)
            short = [f"{seed} ({'/'.join(sorted(status[cell, seed])) or 'not started'})" for seed in seeds
                     if "complete" not in status[cell, seed]]
            if short:
                short_cells.append(f"- {cell.label()}: seed {', '.join(short)}")
    return ["## Missing runs", "", "Cells short of a seed among those seen in any run dir; `python -m hsv_exp -m -cd "
            "sweeps -cn lowres dry_run=true` lists every job of the sweep and its state.", ""] + (
        short_cells or ["None: every cell has every seed."]) + [""]


def compute_hours(runs: list[Run]) -> list[str]:
    """Σ train_wall_s (training with its per-epoch dev evaluation, both stages) per device and thread count;
    runs that reused an equivalent run's results cost nothing and are left out."""
    hours = defaultdict(lambda: [0.0, 0])
    for run in runs:
        if run.status != "complete" or run.info.get("reused_from"):
            continue
        compute = run.info["compute"]
        threads = (run.info["config"].get("train") or {}).get("num_threads")
        where = hours[compute.get("device", "?"), threads]
        where[0] += compute.get("train_wall_s", math.nan) / 3600
        where[1] += 1
    return [f"- {device}, {'default' if threads is None else threads} thread{'s' * (threads != 1)} per run: "
            f"{h:.2f} h over {n} runs" + (f" ({h * threads:.2f} core-hours)" if threads else "")
            for (device, threads), (h, n) in sorted(hours.items(), key=str)]


def tables_markdown(runs: list[Run], command: str) -> str:
    counts = {status: sum(run.status == status for run in runs) for status in ("complete", "failed", "scan-only", "incomplete")}
    found = cells(runs)
    lines = ["# The low-resource study: generated tables", "",
             f"Generated by `{command}` from {len(runs)} run dirs: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".",
             "", "Scores: the main dev metric ×100 at the best dev epoch (as MVCR's authors report) and at the last, "
             "mean ± sample std over seeds (— with one seed). Train TFLOPs: both stages of EH-FT/LP-FT, MVCR's "
             "autoencoders included; train FLOPs %: per token against full fine-tuning of the whole model. Train time: "
             "the optimizer steps; train + eval wall: with the dev evaluation after every epoch.", "",
             "## Compute", "", "Wall time of training and evaluation summed over the completed runs (process start, "
             "data loading and the cached scans not included):", ""]
    lines += compute_hours(runs) or ["- no completed runs"]
    lines += ["", "## Scores per task, N and condition", ""] + (score_table(found) if found else ["No completed runs.", ""])
    lines += claim_tables(found) + cost_tables(found) + missing_lines(runs)
    lines += run_list("Failed runs", [run for run in runs if run.status == "failed"], with_error=True)
    lines += run_list("Incomplete runs", [run for run in runs if run.status == "incomplete"], with_error=False)
    return "\n".join(lines)


# ---------------------------------------------------------------- figure


def score_vs_n_figure(found: dict[Cell, Condition]):
    """Best-epoch score ×100 against N, one panel per task, a line per (strategy, selection):
    colour = strategy, solid = the whole model, dashed = the window; error bars = std over seeds."""
    tasks = sorted({cell.task for cell in found})
    figure, axes = grid(len(tasks), width=4.6, height=3.6)
    strategies = sorted({cell.strategy for cell in found}, key=_strategy_rank)
    colours = {strategy: f"C{index % 10}" for index, strategy in enumerate(strategies)}
    several = len({(cell.model, cell.tuning) for cell in found}) > 1
    for task, ax in zip(tasks, axes):
        lines = defaultdict(list)
        for cell, condition in found.items():
            if cell.task == task:
                lines[cell.model, cell.tuning, cell.selection, cell.strategy].append((cell.n, condition))
        for (model, tuning, selection, strategy), points in sorted(lines.items()):
            points.sort(key=lambda point: point[0])
            scores = [[100 * s for s in c.scores("best")] for _, c in points]
            ax.errorbar([n for n, _ in points], [statistics.fmean(s) for s in scores],
                        yerr=[statistics.stdev(s) if len(s) > 1 else 0.0 for s in scores], color=colours[strategy],
                        linestyle="-" if selection == WHOLE else "--", marker="o" if selection == WHOLE else "D",
                        markerfacecolor=None if selection == WHOLE else "none", capsize=3, alpha=0.85,
                        label=f"{strategy} · {selection}" + (f" ({model}, {tuning})" if several else ""))
        ns = sorted({cell.n for cell in found if cell.task == task})
        ax.set(title=task, xlabel="training examples N", ylabel="best-epoch dev score ×100", xscale="log")
        ax.set_xticks(ns, [n_label(n) for n in ns])
        ax.minorticks_off()  # the log axis's minor labels (2×10²) would sit between the sizes
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    figure.suptitle("score vs training-set size (mean ± std over seeds; solid = whole model, dashed = window)")
    return figure


# ---------------------------------------------------------------- the study folder


def aggregate(dirs: Iterable[Path], out: Path, command: str | None = None) -> tuple[list[Run], list[Path]]:
    """Read every run under `dirs`, write runs.csv, paired.csv, tables.md and score_vs_n.png into `out`."""
    runs, out, default_command = read_runs(dirs, out, "lowres")
    command = command or default_command
    found = cells(runs)
    outputs = {
        "runs.csv": lambda p: write_csv(p, map(csv_row, runs), CSV_COLUMNS),
        "paired.csv": lambda p: write_csv(p, (pair_row(*pair) for pair in pairs(found)), PAIRED_COLUMNS),
        "tables.md": lambda p: write_text(p, tables_markdown(runs, command)),
        "score_vs_n.png": (lambda p: write_figure(p, score_vs_n_figure(found))) if found else None,
    }
    return runs, write_outputs(out, outputs)
