"""Hidden-state variability per layer, from one streaming forward pass.

For layer l (0 = embedding output, 1..L = transformer layers) and K classes, with h_i the pooled
sequence state of example i, class means m_y and centre m:

    Sigma_w = (1/K) sum_y (1/n_y) sum_{i in y} (h_i - m_y)(h_i - m_y)^T
    Sigma_b = (1/K) sum_y (m_y - m)(m_y - m)^T
    nu(l)   = (1/K) tr(Sigma_w Sigma_b^+)

metric=variability (Xie et al. 2022): m is the unweighted mean of the class means.
metric=nc1 (Papyan et al. 2020): Sigma_w weights classes by frequency (the pooled within-class
covariance over all N examples) and m is the global mean of all examples.

Sigma_b has rank <= K-1 (for nc1 too: the frequency-weighted centred means sum to zero), so its pseudo-inverse is taken through the K x K Gram
matrix of the centred class means, never as a d x d `pinv` (whose default tolerance is wrong by
orders of magnitude on real hidden states). With C = [m_y - m] (d x K) and G = C^T C:
    Sigma_b^+ = K C (G^+)^2 C^T   =>   nu = tr((G^+)^2 C^T Sigma_w C)     (variability)
For K = 2 this is 2 D^T Sigma_w D / |D|^4 with D = m_1 - m_0.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from hsv_exp.backbone import encoder_inputs
from hsv_exp.errors import DataError
from hsv_exp.pooling import pool, token_mask
from hsv_exp.precision import resolve


class ClassStatistics:
    """Streaming per-layer, per-class count, sum and scatter of pooled states, in float64.

    Memory: layers x K x d x d float64 (MiniLM, K=2: 7 x 2 x 384^2 x 8 B = 17 MB), independent of
    the corpus size. States are shifted by a per-layer reference (the first batch's mean) before
    accumulating, which keeps the sums well conditioned; covariances are shift-invariant.
    """

    def __init__(self, num_layers: int, num_classes: int, dim: int):
        shape = (num_layers, num_classes)
        self.count = np.zeros(num_classes, dtype=np.int64)
        self.sum = torch.zeros(*shape, dim, dtype=torch.float64)
        self.scatter = torch.zeros(*shape, dim, dim, dtype=torch.float64)
        self.reference: torch.Tensor | None = None

    def update(self, states: torch.Tensor, classes: torch.Tensor) -> None:
        """states (layers, batch, d) any float dtype; classes (batch,) int64 in 0..K-1."""
        states = states.detach().to("cpu", torch.float64)
        if self.reference is None:
            self.reference = states.mean(1, keepdim=True)
        states = states - self.reference
        for cls in classes.unique().tolist():
            members = states[:, classes == cls]  # (layers, n, d)
            self.count[cls] += members.shape[1]
            self.sum[:, cls] += members.sum(1)
            self.scatter[:, cls] += members.transpose(1, 2) @ members

    def class_means(self) -> torch.Tensor:
        """(layers, K, d), in the shifted frame."""
        return self.sum / torch.as_tensor(self.count, dtype=torch.float64)[None, :, None]

    def class_covariances(self) -> torch.Tensor:
        """(layers, K, d, d): (1/n_y) sum (h - m_y)(h - m_y)^T per class."""
        means = self.class_means()
        counts = torch.as_tensor(self.count, dtype=torch.float64)[None, :, None, None]
        return self.scatter / counts - means.unsqueeze(-1) * means.unsqueeze(-2)


def trace_ratio(sigma_w: torch.Tensor, centred_means: torch.Tensor, rank: int) -> float:
    """(1/K) tr(Sigma_w Sigma_b^+) with Sigma_b = (1/K) C C^T, C = centred_means^T (K x d input).

    Uses the rank-`rank` pseudo-inverse of the Gram matrix G = C^T C.
    """
    gram = centred_means @ centred_means.T  # (K, K)
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)
    order = eigenvalues.argsort(descending=True)[:rank]
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    keep = eigenvalues > eigenvalues[0] * 1e-12
    eigenvalues, eigenvectors = eigenvalues[keep], eigenvectors[:, keep]
    gram_pinv_sq = eigenvectors @ torch.diag(eigenvalues**-2) @ eigenvectors.T
    projected = centred_means @ sigma_w @ centred_means.T  # C^T Sigma_w C, (K, K)
    # (1/K) tr(Sigma_w * K C G+^2 C^T) = tr(G+^2 C^T Sigma_w C)
    return float(torch.trace(gram_pinv_sq @ projected))


def scores_from_statistics(stats: ClassStatistics, metric: str = "variability") -> list[float]:
    """nu(l) for every layer l, from accumulated statistics."""
    if (stats.count == 0).any():
        empty = np.flatnonzero(stats.count == 0).tolist()
        raise DataError(f"variability scan: class id(s) {empty} have no examples; the metric needs every class")
    num_classes = len(stats.count)
    if num_classes < 2:
        raise DataError("variability scan needs at least 2 classes")
    means = stats.class_means()  # (layers, K, d)
    covariances = stats.class_covariances()  # (layers, K, d, d)
    weights = torch.as_tensor(stats.count / stats.count.sum(), dtype=torch.float64)
    scores = []
    for layer in range(means.shape[0]):
        if metric == "variability":
            sigma_w = covariances[layer].mean(0)
            centre = means[layer].mean(0)
            rank = num_classes - 1
        elif metric == "nc1":
            sigma_w = (weights[:, None, None] * covariances[layer]).sum(0)
            centre = (weights[:, None] * means[layer]).sum(0)
            rank = num_classes - 1
        else:
            raise ValueError(f"unknown metric {metric}")
        scores.append(trace_ratio(sigma_w, means[layer] - centre, rank))
    return scores


def direct_scores(states: torch.Tensor, classes: torch.Tensor, metric: str = "variability") -> list[float]:
    """The metric from all states at once, (layers, N, d) -> one score per layer: the streaming code of
    `scan` in a single update. Not an independent reference: tests/test_variability.py checks it
    against the closed forms and the explicit d x d definition, and streaming against it."""
    stats = ClassStatistics(states.shape[0], int(classes.max()) + 1, states.shape[-1])
    stats.update(states, classes)
    return scores_from_statistics(stats, metric)


@torch.inference_mode()
def pooled_layer_states(backbone, batch: dict[str, torch.Tensor], pooling: str, accepts: set[str]) -> torch.Tensor:
    """One forward pass -> (L+1, batch, d) pooled states of the embedding output and every layer."""
    hidden_states = backbone(**encoder_inputs(batch, accepts), output_hidden_states=True).hidden_states
    mask = token_mask(batch["attention_mask"], batch.get("special_tokens_mask"))
    return torch.stack([pool(hidden, mask, pooling) for hidden in hidden_states])


def scan(backbone, batches, classes_of_batch, num_classes: int, pooling: str, metric: str, device: torch.device,
         accepts: set[str], progress: bool = True, precision: str = "fp32") -> tuple[list[float], dict]:
    """Run the scan over `batches` (an iterable of collated batches); -> (scores, info).

    precision: fp32 (the contract) or bf16 (autocast forward); the statistics accumulate in float64 either way."""
    started = time.perf_counter()
    stats = None
    backbone.eval()
    autocast = resolve(precision, device)
    for batch in tqdm(batches, desc="variability scan", disable=not progress, leave=False):
        batch = {key: value.to(device) for key, value in batch.items()}
        with autocast.autocast():
            states = pooled_layer_states(backbone, batch, pooling, accepts)
        if stats is None:
            stats = ClassStatistics(states.shape[0], num_classes, states.shape[-1])
        stats.update(states, classes_of_batch(batch).cpu())
    if stats is None:
        raise DataError("variability scan: no examples to scan")
    scores = scores_from_statistics(stats, metric)
    return scores, {"class_counts": stats.count.tolist(), "scan_seconds": time.perf_counter() - started}
