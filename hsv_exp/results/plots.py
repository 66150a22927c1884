"""Figures of a study: each function takes aggregated data and returns a matplotlib Figure.

Figures are drawn on the Agg canvas directly (no pyplot), so no display or global backend state is
involved; hsv_exp.results.study saves them.
"""

from __future__ import annotations

import math
import statistics
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hsv_exp.results.runs import Condition, Curve, head_layer_of, mean_curves, mean_scores, setting_label

DEFAULT_SETTING = (None, None)  # whole train split, natural class frequencies


def grid(n_panels: int, width: float = 4.2, height: float = 3.4) -> tuple[Figure, list]:
    cols = min(3, n_panels)
    rows = math.ceil(n_panels / cols)
    figure = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False).ravel().tolist()
    for unused in axes[n_panels:]:
        unused.set_visible(False)
    return figure, axes[:n_panels]


def _plot_curve(ax, layers: tuple[int, ...], scores: list[float], label: str) -> None:
    # l* goes into the legend: text next to the stars would overlap when curves share a minimum.
    head = head_layer_of(layers, scores)
    (line,) = ax.plot(layers, scores, marker="o", markersize=3, label=f"{label}, ℓ*={head}")
    ax.plot([head], [scores[layers.index(head)]], marker="*", markersize=14, color=line.get_color(),
            markeredgecolor="black", linestyle="none")


def _scans(n: int) -> str:
    return f"{n} scan{'s' * (n != 1)}"


def variability_figure(curves: list[Curve]) -> Figure:
    """nu per layer, one panel per task, one line per (model, metric, pooling); star = l*.

    Uses the default scan setting (whole train split, natural classes) where it exists; a group
    scanned only under other settings shows each of them.
    """
    grouped = mean_curves(curves)
    tasks = sorted({group[0] for group in grouped})
    figure, axes = grid(len(tasks))
    for task, ax in zip(tasks, axes):
        for (group_task, model, metric, pooling, layers), settings in sorted(grouped.items()):
            if group_task != task:
                continue
            chosen = [DEFAULT_SETTING] if DEFAULT_SETTING in settings else sorted(settings, key=str)
            for setting in chosen:
                suffix = "" if setting == DEFAULT_SETTING else f"; {setting_label(setting)}"
                _plot_curve(ax, layers, mean_scores(settings[setting]), f"{model} ({metric}, {pooling}{suffix})")
        ax.set(title=task, xlabel="layer", ylabel="ν (log scale)", yscale="log")
        ax.legend(fontsize=7)
    figure.suptitle("ν per layer (★ = ℓ*, argmin over layers 1..L)")
    return figure


# (marker, filled): variability markers are hollow so a top-k point under them (same layers) shows.
SELECT_MARKERS = {"all": ("s", True), "top": ("v", True), "variability": ("o", False), "manual": ("D", True)}
RULE_MARKERS = {"argmin": ("o", False), "tolerance": ("D", False)}


def score_vs_compute_figure(conditions: list[Condition]) -> Figure:
    """Best-epoch main dev score (x100, mean +- sample std over seeds) vs training FLOPs % of full FT.

    One point per condition: colour = tuning method, marker = selection, the number beside it = k.
    """
    tasks = sorted({c.task for c in conditions})
    figure, axes = grid(len(tasks), width=5.0, height=4.0)
    methods = sorted({(c.model, c.tuning) for c in conditions})
    colours = {method: f"C{index % 10}" for index, method in enumerate(methods)}
    for task, ax in zip(tasks, axes):
        shown = set()
        for condition in (c for c in conditions if c.task == task):
            fraction = condition.compute_mean("train_flops_fraction")
            scores = [100 * s for s in condition.scores("best")]
            error = statistics.stdev(scores) if len(scores) > 1 else 0.0
            x, y = (100 * fraction if fraction is not None else math.nan), statistics.fmean(scores)
            select = condition.select.split(" ")[0]
            rule = condition.rule.split(" ")[0]
            kind = f"{select} {rule}" if select == "variability" else select
            marker, filled = RULE_MARKERS.get(rule, ("o", False)) if select == "variability" else SELECT_MARKERS.get(select, ("x", True))
            method = (condition.model, condition.tuning)
            label = None
            if (method, kind) not in shown:
                shown.add((method, kind))
                label = f"{condition.tuning} · {kind}" + (f" ({condition.model})" if len({m for m, _ in methods}) > 1 else "")
            ax.errorbar([x], [y], yerr=[error], marker=marker, color=colours[method], markerfacecolor=None if filled else "none",
                        capsize=3, linestyle="none", markersize=6 if filled else 9, label=label, alpha=0.85)
            if condition.k != "—":
                ax.annotate(condition.k, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=6, color=colours[method])
        ax.set(title=task, xlabel="training FLOPs (% of full fine-tuning)", ylabel="best-epoch dev score ×100",
               xlim=(0, 105))  # the whole range, so savings read the same in every panel
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    figure.suptitle("score vs training compute (mean ± std over seeds; number = k layers tuned)")
    return figure


def robustness_figure(curves: list[Curve], tasks: list[str]) -> Figure:
    """One panel per (task, model, metric, pooling) with a line per scan setting."""
    groups = sorted((group, settings) for group, settings in mean_curves(curves).items() if group[0] in tasks)
    figure, axes = grid(len(groups))
    for ((task, model, metric, pooling, layers), settings), ax in zip(groups, axes):
        for setting, scans in sorted(settings.items(), key=lambda item: str(item[0])):
            _plot_curve(ax, layers, mean_scores(scans), f"{setting_label(setting)} ({_scans(len(scans))})")
        ax.set(title=f"{task} · {model} ({metric}, {pooling})", xlabel="layer", ylabel="mean ν (log scale)", yscale="log")
        ax.legend(fontsize=7)
    figure.suptitle("ν per scan setting (★ = ℓ*)")
    return figure
