"""hsv_exp.glue_metrics against values worked out by hand on inputs small enough to check on paper, and its
`evaluate` module against the scikit-learn/SciPy calls on random predictions for every task."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from omegaconf import OmegaConf

from hsv_exp.glue_metrics import EVALUATE_PATH, METRICS, TASK_DIR, compute, task_metrics

# Confusion matrix of PREDICTIONS vs LABELS: TP=2 (0, 3), TN=1 (1), FP=1 (2), FN=0.
PREDICTIONS = np.array([1, 0, 1, 1])
LABELS = np.array([1, 0, 0, 1])


def test_accuracy_counts_exact_matches():
    assert compute(["accuracy"], PREDICTIONS, LABELS) == {"accuracy": 0.75}
    assert compute(["accuracy"], LABELS, LABELS)["accuracy"] == 1.0


def test_f1_is_binary_f1_of_class_1():
    # precision 2/3, recall 1 -> F1 = 2 * (2/3) / (5/3) = 0.8
    assert compute(["f1"], PREDICTIONS, LABELS)["f1"] == pytest.approx(0.8)
    # Swapping the classes scores class 1 again, not a macro average: TP=1, FP=0, FN=1 -> 2/3.
    assert compute(["f1"], 1 - PREDICTIONS, 1 - LABELS)["f1"] == pytest.approx(2 / 3)


def test_f1_without_positive_predictions_is_zero():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns that precision is undefined
        assert compute(["f1"], np.zeros(4, dtype=int), LABELS)["f1"] == 0.0


def test_mcc_matches_the_formula():
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 0) / sqrt(3 * 2 * 2 * 1)
    assert compute(["mcc"], PREDICTIONS, LABELS)["mcc"] == pytest.approx(2 / math.sqrt(12))
    assert compute(["mcc"], 1 - LABELS, LABELS)["mcc"] == pytest.approx(-1.0)


def test_pearson_matches_the_formula():
    # x - mean = (-1, 0, 1), y - mean = (-4/3, -1/3, 5/3): cov 3, var_x 2, var_y 42/9
    predictions, labels = np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0])
    assert compute(["pearson"], predictions, labels)["pearson"] == pytest.approx(3 / math.sqrt(2 * 42 / 9))


def test_spearman_uses_ranks_and_averages_ties():
    # rank differences (0, -1, 1, 0): rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8
    assert compute(["spearmanr"], np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0]))["spearmanr"] == pytest.approx(0.8)
    # A monotone but non-linear relation is a perfect rank correlation, not a perfect Pearson one.
    predictions, labels = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 4.0, 9.0, 100.0])
    values = compute(["spearmanr", "pearson"], predictions, labels)
    assert values["spearmanr"] == pytest.approx(1.0)
    assert values["pearson"] < 0.9
    # Tied predictions get the mean rank: ranks (1.5, 1.5, 3) vs (1, 2, 3) -> 1.5 / sqrt(1.5 * 2)
    assert compute(["spearmanr"], np.array([1.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0]))["spearmanr"] == pytest.approx(1.5 / math.sqrt(3))


def test_constant_inputs_give_zero_not_nan():
    """A collapsed regression head predicts one value; the metric must stay a number so the best
    epoch can still be compared."""
    labels = np.array([0.5, 1.0, 4.0, 2.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # also: no ConstantInputWarning leaks out
        # 0.1 is not exact in binary: np.std of a constant 0.1 array is ~1e-17, not 0.
        for constant in (np.full(4, 2.0), np.full(4, 0.1)):
            assert compute(["pearson", "spearmanr"], constant, labels) == {"pearson": 0.0, "spearmanr": 0.0}
            assert compute(["pearson", "spearmanr"], labels, constant) == {"pearson": 0.0, "spearmanr": 0.0}
        assert compute(["mcc"], np.ones(4, dtype=int), np.array([0, 1, 0, 1]))["mcc"] == 0.0


def test_compute_returns_plain_floats_for_exactly_the_names_asked():
    values = compute(["mcc", "accuracy"], PREDICTIONS, LABELS)
    assert list(values) == ["mcc", "accuracy"]
    assert all(type(value) is float for value in values.values())  # JSON-serialisable
    assert set(METRICS) >= {"accuracy", "f1", "mcc", "pearson", "spearmanr"}
    with pytest.raises(KeyError):
        compute(["bleu"], PREDICTIONS, LABELS)


# ---------------------------------------------------------------- the `evaluate` module
SKLEARN_SCIPY = {  # the libraries' own calls, independent of glue_metrics
    "accuracy": lambda p, r: __import__("sklearn.metrics").metrics.accuracy_score(r, p),
    "f1": lambda p, r: __import__("sklearn.metrics").metrics.f1_score(r, p),
    "mcc": lambda p, r: __import__("sklearn.metrics").metrics.matthews_corrcoef(r, p),
    "pearson": lambda p, r: __import__("scipy.stats").stats.pearsonr(p, r)[0],
    "spearmanr": lambda p, r: __import__("scipy.stats").stats.spearmanr(p, r)[0],
}
# GLUE's configs (evaluate's config names); a variant such as sst2_8k (a subsample) has no metrics of its own
TASKS = sorted(path.stem for path in TASK_DIR.glob("*.yaml") if "metrics" in OmegaConf.load(path).task)


@pytest.mark.parametrize("task", TASKS)
def test_evaluate_module_loads_offline_and_gives_the_sklearn_numbers(task, monkeypatch):
    evaluate = pytest.importorskip("evaluate")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    names = task_metrics(task)
    rng = np.random.default_rng(len(task))
    if "pearson" in names:  # STS-B: similarity scores 0..5
        references, predictions = rng.uniform(0, 5, 200), rng.uniform(0, 5, 200)
    else:
        classes = 3 if task == "mnli" else 2
        references, predictions = rng.integers(0, classes, 200), rng.integers(0, classes, 200)
    metric = evaluate.load(EVALUATE_PATH, task)
    values = metric.compute(predictions=predictions.tolist(), references=references.tolist())
    assert values == compute(names, predictions, references)
    assert list(values) == names and values == {name: pytest.approx(float(SKLEARN_SCIPY[name](predictions, references)), abs=1e-12)
                                                for name in names}


def test_evaluate_module_names_the_tasks_on_an_unknown_one():
    with pytest.raises(KeyError, match="no GLUE task 'rte2'.*'rte'"):
        task_metrics("rte2")
