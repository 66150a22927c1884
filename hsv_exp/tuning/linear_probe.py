"""The closed-form linear probe as a tuning method (tuning=linear_probe): no SGD.

The head layer's pooled states (as the head reads them: `LayerClassifier.encode`, frozen) of the
train split are computed once, `hsv_exp.probe.fit_probe` fits them (standardised features;
logistic regression, or ridge for regression tasks), and the fit becomes the model's head, so the
model predicts what the probe predicts. `fit` has `train.train`'s signature and returns its
TrainResult: one "epoch" (the fit), so best = last, and the times are the real ones (the encoder
pass included).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from hsv_exp import data as data_lib
from hsv_exp import glue_metrics
from hsv_exp.config import TaskConfig, TrainConfig
from hsv_exp.probe import Probe, fit_probe
from hsv_exp.tuning.probe import apply  # noqa: F401  (the same model as tuning=probe: the head on a frozen encoder)

PARAMETER_PREFIX = None  # nothing is injected: the head is set from the fit


@torch.inference_mode()
def pooled_states(model, encoded: data_lib.Encoded, batch_size: int, pad_token_id: int, device: torch.device) -> np.ndarray:
    """(N, d) float32 head-layer pooled states of `encoded`, in example order."""
    model.eval()
    states = np.zeros((len(encoded), model.head.in_features), dtype=np.float32)
    keys = ("input_ids", "attention_mask", "special_tokens_mask", "token_type_ids")
    for batch in data_lib.loader(encoded, batch_size, pad_token_id, by_length=True):
        inputs = {key: batch[key].to(device) for key in keys if key in batch}
        states[batch["index"].numpy()] = model.encode(**inputs).float().cpu().numpy()
    return states


def set_head(head: torch.nn.Linear, probe: Probe, num_labels: int) -> None:
    """Write the probe (a linear map of standardised features) into `head` (raw features):
    w' = w / scale, b' = b - w' . mean. A binary logistic fit has one row: logits (0, z)."""
    if probe.classifier is not None:
        coef, intercept = probe.classifier.coef_, probe.classifier.intercept_
        classes = probe.classifier.classes_
        weight = np.zeros((num_labels, coef.shape[1]))
        bias = np.full(num_labels, -1e4)  # a class absent from the train split is never predicted
        if len(classes) == 2:
            weight[classes[0]], bias[classes[0]] = 0.0, 0.0
            weight[classes[1]], bias[classes[1]] = coef[0], intercept[0]
        else:
            weight[classes], bias[classes] = coef, intercept
    else:
        weight, bias = probe.coef[None, :], np.array([probe.intercept])
    weight = weight / probe.scale
    bias = bias - weight @ probe.mean
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(bias, dtype=head.bias.dtype))


def _train_loss(probe: Probe, features: np.ndarray, targets: np.ndarray) -> float:
    if probe.classifier is None:
        return float(np.mean((probe.predict(features) - targets) ** 2))
    from sklearn.metrics import log_loss

    proba = probe.classifier.predict_proba(probe.transform(features))
    return float(log_loss(targets, proba, labels=probe.classifier.classes_))


def fit(model, train_data: data_lib.Encoded, eval_data: dict[str, data_lib.Encoded], task: TaskConfig, cfg: TrainConfig,
        seed: int, pad_token_id: int, run_dir: Path | None = None, log=lambda metrics: None, progress: bool = True,
        precision=None, regularizer=None, started: float | None = None):
    """Fit the probe on `train_data`'s head-layer states, score it on each of `eval_data`; -> TrainResult.
    `started`: as in hsv_exp.train.train (the record's `time/elapsed_s`)."""
    from hsv_exp.train import TrainResult, peak_memory_mb, pick_device  # hsv_exp.train imports this package

    device = pick_device(cfg.device)
    model.to(device)
    fit_started = time.perf_counter()
    features = pooled_states(model, train_data, cfg.eval_batch_size, pad_token_id, device)
    probe = fit_probe(features, train_data.labels, task.is_regression, seed)
    set_head(model.head, probe, task.num_labels)
    fit_time = time.perf_counter() - fit_started
    record = {"epoch": 1, "train/loss": _train_loss(probe, features, train_data.labels), "train/lr": 0.0,
              "epoch_time_s": fit_time}
    for split, data in eval_data.items():
        predictions = probe.predict(pooled_states(model, data, cfg.eval_batch_size, pad_token_id, device))
        record.update({f"{split}/{name}": value
                       for name, value in glue_metrics.compute(task.metrics, predictions, data.labels).items()})
    if started is not None:
        record["time/elapsed_s"] = time.perf_counter() - started
    log(record)
    return TrainResult(history=[record], best=record, last=record, train_time_s=fit_time, epoch_times_s=[fit_time],
                       wall_s=time.perf_counter() - fit_started,
                       peak_memory_mb=peak_memory_mb(device),
                       precision={"dtype": "fp32", "requested": cfg.precision, "device": device.type,
                                  "reason": "closed-form fit on fp32 states", "cpu": None})
