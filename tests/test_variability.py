"""The variability metric: closed forms, streaming == direct, invariances, real model states."""

import numpy as np
import pytest
import torch

from hsv_exp.errors import DataError
from hsv_exp.variability import ClassStatistics, direct_scores, pooled_layer_states, scores_from_statistics


def closed_form_two_classes(states: np.ndarray, labels: np.ndarray) -> float:
    """nu = 2 D^T Sigma_w D / |D|^4, D = m1 - m0, Sigma_w = mean of the two class covariances."""
    means = [states[labels == c].mean(0) for c in (0, 1)]
    covariances = [np.cov(states[labels == c].T, bias=True) for c in (0, 1)]
    delta = means[1] - means[0]
    sigma_w = (covariances[0] + covariances[1]) / 2
    return float(2 * delta @ sigma_w @ delta / (delta @ delta) ** 2)


def naive_nu(states: np.ndarray, labels: np.ndarray, metric: str = "variability") -> float:
    """The definition with explicit d x d matrices and a rank-limited pseudo-inverse of Sigma_b."""
    classes = np.unique(labels)
    K = len(classes)
    means = np.stack([states[labels == c].mean(0) for c in classes])
    covariances = np.stack([np.cov(states[labels == c].T, bias=True) for c in classes])
    if metric == "variability":
        sigma_w, centre, rank = covariances.mean(0), means.mean(0), K - 1
    else:
        weights = np.array([(labels == c).mean() for c in classes])
        sigma_w, centre, rank = np.einsum("k,kij->ij", weights, covariances), states.mean(0), K - 1
    centred = means - centre
    sigma_b = centred.T @ centred / K
    eigenvalues, eigenvectors = np.linalg.eigh(sigma_b)
    top = np.argsort(eigenvalues)[::-1][:rank]
    pinv = eigenvectors[:, top] @ np.diag(1 / eigenvalues[top]) @ eigenvectors[:, top].T
    return float(np.trace(sigma_w @ pinv) / K)


def gaussian_classes(sizes, dim=16, separation=2.0, seed=0):
    rng = np.random.default_rng(seed)
    states, labels = [], []
    for cls, size in enumerate(sizes):
        mean = rng.normal(size=dim) * separation
        scale = rng.uniform(0.5, 2.0, size=dim)
        states.append(mean + rng.normal(size=(size, dim)) * scale)
        labels.append(np.full(size, cls))
    return np.concatenate(states), np.concatenate(labels)


def as_layers(states: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(states)[None]  # one "layer"


def test_two_class_closed_form_on_synthetic_data():
    states, labels = gaussian_classes([50, 80])
    nu = direct_scores(as_layers(states), torch.from_numpy(labels))[0]
    assert nu == pytest.approx(closed_form_two_classes(states, labels), rel=1e-9)


def test_two_class_closed_form_by_hand():
    # class 0 at x = -1 +- 1, class 1 at x = +1 +- 1 (1-d): Sigma_w = 1, D = 2 -> nu = 2 * 4 / 16 = 0.5
    states = np.array([[-2.0], [0.0], [0.0], [2.0]])
    labels = np.array([0, 0, 1, 1])
    assert direct_scores(as_layers(states), torch.from_numpy(labels))[0] == pytest.approx(0.5)


@pytest.mark.parametrize("metric", ["variability", "nc1"])
@pytest.mark.parametrize("sizes", [[30, 70, 50], [20, 25, 30, 60]])
def test_multi_class_matches_the_definition(metric, sizes):
    states, labels = gaussian_classes(sizes, dim=12)
    nu = direct_scores(as_layers(states), torch.from_numpy(labels), metric)[0]
    assert nu == pytest.approx(naive_nu(states, labels, metric), rel=1e-8)


def test_streaming_equals_direct_computation_on_all_states():
    rng = np.random.default_rng(1)
    layers, n, d = 4, 300, 24
    states = torch.from_numpy(rng.normal(size=(layers, n, d)) * 3 + 50.0)  # large offset: tests conditioning
    labels = torch.from_numpy(rng.integers(0, 3, size=n))
    states[:, labels == 1] += 1.5
    direct = direct_scores(states, labels)
    streaming = ClassStatistics(layers, 3, d)
    for start in range(0, n, 37):  # uneven batches, float32 input as a model would give
        streaming.update(states[:, start:start + 37].float(), labels[start:start + 37])
    streamed = scores_from_statistics(streaming)
    reference = [naive_nu(states[layer].numpy(), labels.numpy()) for layer in range(layers)]
    assert streamed == pytest.approx(direct, rel=1e-5)
    assert direct == pytest.approx(reference, rel=1e-8)


def test_variability_is_invariant_to_class_imbalance_by_duplication():
    states, labels = gaussian_classes([40, 40, 40], dim=10)
    duplicated = np.concatenate([states, np.repeat(states[labels == 0], 4, axis=0)])
    duplicated_labels = np.concatenate([labels, np.zeros(4 * 40, dtype=labels.dtype)])
    base = direct_scores(as_layers(states), torch.from_numpy(labels))[0]
    imbalanced = direct_scores(as_layers(duplicated), torch.from_numpy(duplicated_labels))[0]
    assert imbalanced == pytest.approx(base, rel=1e-9)
    # NC1 weights classes by frequency, so it does move: the invariance is a property of nu alone.
    nc1_base = direct_scores(as_layers(states), torch.from_numpy(labels), "nc1")[0]
    nc1_imbalanced = direct_scores(as_layers(duplicated), torch.from_numpy(duplicated_labels), "nc1")[0]
    assert abs(nc1_imbalanced - nc1_base) > 1e-3 * nc1_base


def test_a_default_tolerance_pinv_is_not_the_metric():
    """Why the Gram route: on d >> K states, np.linalg.pinv(Sigma_b) keeps noise directions."""
    states, labels = gaussian_classes([200, 200], dim=64, separation=0.2)
    sigma_b_rank = naive_nu(states, labels)
    means = np.stack([states[labels == c].mean(0) for c in (0, 1)])
    centred = means - means.mean(0)
    sigma_b = (centred.T @ centred / 2).astype(np.float32)  # as a float32 pipeline would hold it
    sigma_w = np.mean([np.cov(states[labels == c].T, bias=True) for c in (0, 1)], axis=0).astype(np.float32)
    default = float(np.trace(sigma_w @ np.linalg.pinv(sigma_b, hermitian=True)) / 2)
    ours = direct_scores(as_layers(states), torch.from_numpy(labels))[0]
    assert ours == pytest.approx(sigma_b_rank, rel=1e-8)
    assert not np.isclose(default, ours, rtol=0.5)


def test_a_class_without_examples_is_an_error():
    stats = ClassStatistics(1, 3, 4)
    stats.update(torch.randn(1, 10, 4), torch.tensor([0, 1] * 5))
    with pytest.raises(DataError, match="no examples"):
        scores_from_statistics(stats)


def test_closed_form_on_real_minilm_states(minilm, glue_dir):
    """The scan's pooled states from MiniLM on real RTE sentences give the K=2 closed form."""
    from hsv_exp.backbone import forward_kwargs
    from hsv_exp.config import TaskConfig
    from hsv_exp.data import Collator, encode, load_split

    backbone, tokenizer = minilm
    task = TaskConfig(name="rte", glue_folder="RTE", glue_dir=str(glue_dir), text_fields=["sentence1", "sentence2"],
                      label_names=["entailment", "not_entailment"])
    split = load_split(task, "train").subset(np.arange(96))
    encoded = encode(tokenizer, split, 128)
    batch = Collator(tokenizer.pad_token_id)([(encoded.features[i], encoded.labels[i], i) for i in range(len(split))])
    states = pooled_layer_states(backbone, batch, "mean", forward_kwargs(backbone))  # (7, 96, 384)
    assert states.shape == (7, 96, 384)
    labels = torch.from_numpy(split.labels)
    scores = direct_scores(states, labels)
    streaming = ClassStatistics(7, 2, 384)
    for start in range(0, 96, 32):
        streaming.update(states[:, start:start + 32], labels[start:start + 32])
    for layer in range(7):
        expected = closed_form_two_classes(states[layer].double().numpy(), split.labels)
        assert scores[layer] == pytest.approx(expected, rel=1e-6), layer
    assert scores_from_statistics(streaming) == pytest.approx(scores, rel=1e-6)
