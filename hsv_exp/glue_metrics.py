"""GLUE metrics with scikit-learn / SciPy, written once: runs call `compute`, and the `evaluate`
module in EVALUATE_PATH wraps it (`evaluate.load(EVALUATE_PATH, "rte")` works offline, unlike the
hub's metric scripts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from omegaconf import OmegaConf

EVALUATE_PATH = str(Path(__file__).resolve().parent / "glue_metric")  # a folder: evaluate.load(EVALUATE_PATH, task)
TASK_DIR = Path(__file__).resolve().parent.parent / "conf" / "task"

# scikit-learn and SciPy are imported where a metric is computed: together they add ~1.3 s to every
# `python -m hsv_exp` start, including the ones that stop at a config or data error.


def _accuracy(predictions, labels):
    from sklearn.metrics import accuracy_score

    return accuracy_score(labels, predictions)


def _f1(predictions, labels):
    from sklearn.metrics import f1_score

    return f1_score(labels, predictions)  # binary F1 of the positive class (id 1), as GLUE reports


def _mcc(predictions, labels):
    from sklearn.metrics import matthews_corrcoef

    return matthews_corrcoef(labels, predictions)


def _varies(predictions, labels) -> bool:
    # A correlation with a constant side is undefined (SciPy: NaN); report 0.0 so a collapsed
    # regression head, or a dev subset with one score, still compares with other epochs.
    return bool(np.ptp(predictions) > 0 and np.ptp(labels) > 0)  # exact, like SciPy (std of 0.1s is not 0)


def _pearson(predictions, labels):
    from scipy.stats import pearsonr

    return float(pearsonr(predictions, labels)[0]) if _varies(predictions, labels) else 0.0


def _spearmanr(predictions, labels):
    from scipy.stats import spearmanr

    return float(spearmanr(predictions, labels)[0]) if _varies(predictions, labels) else 0.0


METRICS = {"accuracy": _accuracy, "f1": _f1, "mcc": _mcc, "pearson": _pearson, "spearmanr": _spearmanr}


def compute(names: list[str], predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """predictions: class ids, or scores for regression; -> {name: value}."""
    return {name: float(METRICS[name](predictions, labels)) for name in names}


def task_metrics(task: str) -> list[str]:
    """The metric names a task reports: `task.metrics` of conf/task/<task>.yaml."""
    path = TASK_DIR / f"{task}.yaml"
    if not path.is_file():
        raise KeyError(f"no GLUE task {task!r}: expected one of {sorted(p.stem for p in TASK_DIR.glob('*.yaml'))}")
    return list(OmegaConf.load(path).task.metrics)
