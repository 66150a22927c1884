"""Linear probes on the frozen pooled states of every layer, beside nu (issue 13).

The paper's premise is that a layer with low variability nu is already specialised for the task.
The direct test: fit the cheapest possible transfer, a linear model on that layer's frozen pooled
states, and see whether its dev score ranks the layers as nu does.

- `layer_states`: the pooled states of every layer for a split, in one forward pass
  (`output_hidden_states=True`) with the scan's pooling and length-ordered batches.
- `fit_probe` / `probe_score`: the closed-form probe. Features are standardised with the train
  split's mean and std (so one regularisation strength means the same for every layer: the
  embedding output and the top layer differ in scale by an order of magnitude), then
  classification: scikit-learn LogisticRegression, lbfgs (its default solver; multinomial for
  K > 2), C=1.0 (its default; on 384 standardised features and 1,000 examples the fit is
  regularised enough not to interpolate), max_iter=2000 (the default 100 stops before convergence
  on these features); regression (STS-B): ridge in closed form, alpha=1.0.
- `probe_layers`: one probe per layer on one pass's states, with nu from the same states.

`python -m hsv_exp.probe` writes results/probe/ (see `main`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hsv_exp import data as data_lib
from hsv_exp import glue_metrics, variability
from hsv_exp.backbone import forward_kwargs
from hsv_exp.config import TaskConfig

LOGISTIC_C = 1.0
LOGISTIC_MAX_ITER = 2000
RIDGE_ALPHA = 1.0


def layer_states(backbone, encoded: data_lib.Encoded, pad_token_id: int, pooling: str, batch_size: int = 64,
                 device: torch.device = torch.device("cpu")) -> np.ndarray:
    """(L+1, N, d) float32 pooled states of the embedding output and every layer, in example order."""
    backbone = backbone.to(device).eval()
    accepts = forward_kwargs(backbone)
    states = None
    for batch in data_lib.loader(encoded, batch_size, pad_token_id, by_length=True):
        index = batch["index"].numpy()
        pooled = variability.pooled_layer_states(backbone, {key: value.to(device) for key, value in batch.items()},
                                                 pooling, accepts)
        if states is None:
            states = np.zeros((pooled.shape[0], len(encoded), pooled.shape[-1]), dtype=np.float32)
        states[:, index] = pooled.float().cpu().numpy()
    if states is None:
        raise ValueError("layer_states: no examples")
    return states


@dataclass
class Probe:
    """A fitted linear probe: standardisation, then logistic regression or ridge."""

    mean: np.ndarray
    scale: np.ndarray
    classifier: object | None = None  # sklearn LogisticRegression (classification)
    coef: np.ndarray | None = None  # ridge weights (regression), in the standardised space
    intercept: float = 0.0

    def transform(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, dtype=np.float64) - self.mean) / self.scale

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class ids, or scores for regression."""
        standardised = self.transform(features)
        if self.classifier is not None:
            return self.classifier.predict(standardised)
        return standardised @ self.coef + self.intercept


def standardiser(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Train mean and std per feature (std 0 -> 1: a constant feature stays 0)."""
    features = np.asarray(features, dtype=np.float64)
    scale = features.std(0)
    return features.mean(0), np.where(scale > 0, scale, 1.0)


def ridge(features: np.ndarray, targets: np.ndarray, alpha: float = RIDGE_ALPHA) -> tuple[np.ndarray, float]:
    """Closed-form ridge with an unpenalised intercept: min |y - Xw - b|^2 + alpha |w|^2."""
    mean_x, mean_y = features.mean(0), targets.mean()
    centred = features - mean_x
    gram = centred.T @ centred + alpha * np.eye(features.shape[1])
    coef = np.linalg.solve(gram, centred.T @ (targets - mean_y))
    return coef, float(mean_y - mean_x @ coef)


def fit_probe(features: np.ndarray, targets: np.ndarray, is_regression: bool, seed: int = 0) -> Probe:
    from sklearn.linear_model import LogisticRegression

    probe = Probe(*standardiser(features))
    standardised = probe.transform(features)
    if is_regression:
        probe.coef, probe.intercept = ridge(standardised, np.asarray(targets, dtype=np.float64))
    else:
        probe.classifier = LogisticRegression(C=LOGISTIC_C, max_iter=LOGISTIC_MAX_ITER, solver="lbfgs",
                                              random_state=seed).fit(standardised, targets)
    return probe


def probe_score(train_x: np.ndarray, train_y: np.ndarray, dev_x: np.ndarray, dev_y: np.ndarray,
                task: TaskConfig) -> dict[str, float]:
    """Fit on train, score on dev with the task's GLUE metrics."""
    probe = fit_probe(train_x, train_y, task.is_regression)
    return glue_metrics.compute(task.metrics, probe.predict(dev_x), dev_y)


def dense_classes(train_y: np.ndarray, task: TaskConfig) -> torch.Tensor:
    """Class ids 0..K-1 for nu (regression scores binned as the scan bins them)."""
    _, dense = np.unique(data_lib.class_ids(np.asarray(train_y), task), return_inverse=True)
    return torch.as_tensor(dense, dtype=torch.int64)


def probe_layers(train_states: np.ndarray, train_y: np.ndarray, dev_states: np.ndarray, dev_y: np.ndarray,
                 task: TaskConfig, metric: str = "variability") -> list[dict]:
    """One row per layer (0 = embedding output): {layer, nu, <dev metrics>} from one pass's states."""
    nus = variability.direct_scores(torch.from_numpy(train_states), dense_classes(train_y, task), metric)
    return [{"layer": layer, "nu": nu, **probe_score(train_states[layer], train_y, dev_states[layer], dev_y, task)}
            for layer, nu in enumerate(nus)]


def summarise(rows: list[dict], main_metric: str) -> dict:
    """Across layers 1..L (the candidate head layers, as the selection sees them): Spearman rho of
    nu against the probe's main metric, the argmin-nu layer and the best-probe layer."""
    from scipy.stats import spearmanr

    candidates = [row for row in rows if row["layer"] >= 1]
    nus = [row["nu"] for row in candidates]
    scores = [row[main_metric] for row in candidates]
    argmin_nu = candidates[int(np.argmin(nus))]["layer"]
    best_probe = candidates[int(np.argmax(scores))]["layer"]
    return {"spearman": float(spearmanr(nus, scores)[0]), "argmin_nu_layer": argmin_nu, "best_probe_layer": best_probe,
            "same_layer": argmin_nu == best_probe, "probe_at_argmin_nu": scores[nus.index(min(nus))],
            "best_probe": max(scores)}


if __name__ == "__main__":
    from hsv_exp.probe_report import main

    main()
