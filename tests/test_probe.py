"""hsv_exp.probe: per-layer pooled states of one pass, and the linear probe against scikit-learn's own fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_model
from hsv_exp import data as data_lib
from hsv_exp.config import TaskConfig
from hsv_exp.pooling import pool, token_mask
from hsv_exp.probe import LOGISTIC_C, LOGISTIC_MAX_ITER, RIDGE_ALPHA, fit_probe, layer_states, probe_layers, summarise


def random_encoded(n: int, seed: int = 0) -> data_lib.Encoded:
    """Token ids 3..99 of random lengths 3..12, [CLS]=1 ... [SEP]=2 marked special."""
    rng = np.random.default_rng(seed)
    features = []
    for _ in range(n):
        length = int(rng.integers(3, 13))
        ids = [1, *rng.integers(3, 100, size=length - 2).tolist(), 2]
        features.append({"input_ids": ids, "attention_mask": [1] * length, "token_type_ids": [0] * length,
                         "special_tokens_mask": [1] + [0] * (length - 2) + [1]})
    return data_lib.Encoded(features, rng.integers(0, 2, size=n))


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_layer_states_equal_each_examples_hidden_states_pooled_by_hand(pooling):
    model = tiny_model("bert")
    encoded = random_encoded(11)
    states = layer_states(model, encoded, pad_token_id=0, pooling=pooling, batch_size=4)  # length order, padded batches
    assert states.shape == (5, 11, 32)  # embedding output + 4 layers
    for index, feature in enumerate(encoded.features):
        inputs = {key: torch.tensor([value]) for key, value in feature.items() if key != "special_tokens_mask"}
        with torch.no_grad():
            hidden = model(**inputs, output_hidden_states=True).hidden_states
        mask = token_mask(inputs["attention_mask"], torch.tensor([feature["special_tokens_mask"]]))
        for layer in range(5):
            expected = pool(hidden[layer], mask, pooling)[0].numpy()
            np.testing.assert_allclose(states[layer, index], expected, rtol=1e-4, atol=1e-5)


def separable(n: int, d: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    centres = rng.normal(size=(classes, d)) * 2
    scales = rng.uniform(0.1, 10, size=d)  # features of very different scales, as hidden states have
    return (centres[labels] + rng.normal(size=(n, d))) * scales + rng.normal(size=d) * 5, labels


@pytest.mark.parametrize("classes", [2, 5])
def test_logistic_probe_equals_scikit_learns_fit_on_the_same_standardised_features(classes):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_x, train_y = separable(300, 20, classes)
    dev_x, _ = separable(200, 20, classes, seed=1)
    probe = fit_probe(train_x, train_y, is_regression=False)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=LOGISTIC_C, max_iter=LOGISTIC_MAX_ITER)).fit(train_x, train_y)
    fitted = reference[-1]
    np.testing.assert_allclose(probe.classifier.coef_, fitted.coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(probe.classifier.intercept_, fitted.intercept_, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(probe.predict(dev_x), reference.predict(dev_x))
    assert (probe.predict(train_x) == train_y).mean() > 0.9  # it learned the task


def test_ridge_probe_equals_scikit_learns_ridge():
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    train_x, dev_x = rng.normal(size=(200, 15)) * rng.uniform(0.1, 10, size=15), rng.normal(size=(50, 15))
    train_y = train_x @ rng.normal(size=15) + rng.normal(size=200) + 3.0
    probe = fit_probe(train_x, train_y, is_regression=True)
    reference = make_pipeline(StandardScaler(), Ridge(alpha=RIDGE_ALPHA)).fit(train_x, train_y)
    np.testing.assert_allclose(probe.coef, reference[-1].coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(probe.intercept, reference[-1].intercept_, rtol=1e-8)
    np.testing.assert_allclose(probe.predict(dev_x), reference.predict(dev_x), rtol=1e-8, atol=1e-8)


def test_probe_layers_ranks_an_informative_layer_above_noise():
    task = TaskConfig(name="sst2", text_fields=["sentence"], label_names=["negative", "positive"])
    rng = np.random.default_rng(0)
    train_y, dev_y = rng.integers(0, 2, size=200), rng.integers(0, 2, size=100)

    def states(labels):  # layer 0 and 1: noise; layer 2: separable
        noise = rng.normal(size=(3, len(labels), 8)).astype(np.float32)
        noise[2, :, 0] += 4 * labels
        return noise

    rows = probe_layers(states(train_y), train_y, states(dev_y), dev_y, task)
    assert [row["layer"] for row in rows] == [0, 1, 2]
    assert rows[2]["accuracy"] > 0.95 > 0.7 > rows[1]["accuracy"]
    assert rows[2]["nu"] < rows[1]["nu"] / 10
    summary = summarise(rows, "accuracy")
    assert summary["argmin_nu_layer"] == summary["best_probe_layer"] == 2 and summary["same_layer"]
