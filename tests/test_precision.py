"""train.precision / scan.precision: autocast is on or off as configured in every forward pass
(training, evaluation, the frozen-cache build, the scan), and weights and AdamW state stay fp32."""

import json

import pytest
import torch

from hsv_exp import precision as precision_lib
from hsv_exp.classifier import LayerClassifier
from hsv_exp.truncation import truncate_model
from hsv_exp.config import SelectConfig, TrainConfig, TuningConfig
from hsv_exp.data import Collator
from hsv_exp.precision import resolve
from hsv_exp.run import config_fingerprint
from hsv_exp.selection import select_layers
from hsv_exp.train import _optimizer, train
from hsv_exp.tuning import METHODS
from hsv_exp.variability import scan

from conftest import tiny_model
from test_training import TASK, toy_data


def test_explicit_choices_resolve_as_asked():
    assert resolve("fp32", "cpu").dtype == torch.float32 and not resolve("fp32", "cpu").enabled
    assert resolve("bf16", "cpu").dtype == torch.bfloat16
    fp16 = resolve("fp16", "cpu")
    assert fp16.dtype == torch.float32 and "CUDA-only" in fp16.reason
    described = resolve("bf16", "cpu").describe()
    assert described["dtype"] == "bf16" and described["requested"] == "bf16" and "capability" in described["cpu"]
    with pytest.raises(ValueError, match="fp8"):
        resolve("fp8", "cpu")


def test_auto_on_this_cpu_follows_its_flags_and_the_cached_measurement(tmp_path, monkeypatch):
    monkeypatch.setenv("HSV_EXP_CACHE", str(tmp_path))
    chosen = resolve("auto", "cpu")
    flags = precision_lib.cpu_bf16_flags()
    if not flags:
        assert chosen.dtype == torch.float32 and not (tmp_path / "precision_cpu.json").exists()
        return
    [measured] = json.loads((tmp_path / "precision_cpu.json").read_text()).values()
    assert measured["speedup"] == pytest.approx(measured["fp32_s"] / measured["bf16_s"])
    expected = torch.bfloat16 if measured["speedup"] >= precision_lib.MIN_SPEEDUP else torch.float32
    assert chosen.dtype == expected and chosen.describe()["cpu"]["micro_benchmark"] == measured
    assert resolve("auto", "cpu").describe() == chosen.describe()  # the second call reads the cache


def test_a_first_measurement_near_the_threshold_is_repeated_and_the_second_decides(tmp_path, monkeypatch):
    """The decision rule, fed a fixed sequence of measurements (the timing itself is the test above)."""
    monkeypatch.setenv("HSV_EXP_CACHE", str(tmp_path))
    calls = []

    def measure(repeats=9, **_):
        calls.append(repeats)
        speedup = [1.0, 1.6][len(calls) - 1]  # first near 1.05 (a noisy second), then the real ratio
        return {"fp32_s": speedup, "bf16_s": 1.0, "speedup": speedup, "repeats": repeats}

    monkeypatch.setattr(precision_lib, "micro_benchmark", measure)
    measured = precision_lib.cached_micro_benchmark({"cpu": "test"})
    assert calls == [9, 18] and measured["speedup"] == 1.6 and measured["first_speedup"] == 1.0
    calls.clear()
    monkeypatch.setattr(precision_lib, "micro_benchmark", lambda repeats=9, **_: calls.append(repeats) or
                        {"fp32_s": 2.0, "bf16_s": 1.0, "speedup": 2.0, "repeats": repeats})
    assert precision_lib.cached_micro_benchmark({"cpu": "clear"})["speedup"] == 2.0 and calls == [9]  # far from it: once


def _model(head_layer=3, k=1, tuning="full"):
    torch.manual_seed(0)
    encoder = truncate_model(tiny_model("bert"), head_layer).encoder
    model = LayerClassifier(encoder, select_layers(SelectConfig(name="manual", head_layer=head_layer, k=k), 4), num_labels=2)
    METHODS[tuning](model, TuningConfig(name=tuning))
    return model


@pytest.mark.parametrize("name, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_every_forward_pass_autocasts_as_configured(tmp_path, name, dtype):
    """Frozen layer 1 runs only in the cache builds (train and dev); window layer 3 in training and evaluation."""
    model = _model()
    seen: dict[str, set] = {"frozen": set(), "window_train": set(), "window_eval": set()}

    def hook(where):
        def record(module, inputs, output):
            phase = where if where == "frozen" else f"{where}_{'train' if module.training else 'eval'}"
            seen[phase].add(output.dtype)
        return record

    model.layers[0].intermediate.dense.register_forward_hook(hook("frozen"))
    model.layers[2].intermediate.dense.register_forward_hook(hook("window"))
    cfg = TrainConfig(lr=5e-3, epochs=1, batch_size=8, precision=name)
    result = train(model, toy_data(24, 0), {"dev": toy_data(16, 1)}, TASK, cfg, seed=0, pad_token_id=0, progress=False)
    assert result.cache is not None and result.precision["dtype"] == name
    assert seen == {"frozen": {dtype}, "window_train": {dtype}, "window_eval": {dtype}}
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())


def test_a_bf16_step_keeps_master_weights_and_adamw_state_fp32():
    model = _model(head_layer=4, k=4)
    optimizer = _optimizer(model, TrainConfig())
    assert optimizer.defaults["fused"]
    batch = Collator(0)([(feature, label, index) for index, (feature, label) in
                         enumerate(zip(toy_data(8, 0).features, toy_data(8, 0).labels))])
    with resolve("bf16", "cpu").autocast():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert logits.dtype == torch.bfloat16  # the head's linear ran in bf16
    torch.nn.functional.cross_entropy(logits.float(), batch["labels"]).backward()
    optimizer.step()
    states = [value for state in optimizer.state.values() for key, value in state.items() if key != "step"]
    assert states and all(value.dtype == torch.float32 for value in states)
    assert all(parameter.dtype == torch.float32 and parameter.grad.dtype == torch.float32
               for parameter in model.parameters() if parameter.requires_grad)


def test_bf16_scan_accumulates_in_float64_and_stays_close_to_fp32():
    backbone = tiny_model("bert")
    data = toy_data(64, 0)
    collate = Collator(0)
    batches = [collate([(data.features[i], data.labels[i], i) for i in range(begin, begin + 16)]) for begin in range(0, 64, 16)]
    classes = torch.as_tensor(data.labels)
    seen = set()
    backbone.encoder.layer[0].intermediate.dense.register_forward_hook(lambda module, inputs, output: seen.add(output.dtype))
    scores = {}
    for name in ("fp32", "bf16"):
        scores[name], _ = scan(backbone, batches, lambda batch: classes[batch["index"]], 2, "mean", "variability",
                               torch.device("cpu"), {"input_ids", "attention_mask"}, progress=False, precision=name)
    assert seen == {torch.float32, torch.bfloat16}
    assert scores["bf16"] != scores["fp32"]
    assert scores["bf16"] == pytest.approx(scores["fp32"], rel=0.1)


def test_precision_defaults_keep_fingerprints_and_other_values_change_them():
    from dataclasses import asdict

    from hsv_exp.config import ScanConfig

    train_cfg, scan_cfg = asdict(TrainConfig()), asdict(ScanConfig())
    base = {"train": train_cfg, "scan": scan_cfg}
    before = {"train": {**{k: v for k, v in train_cfg.items() if k != "precision"}, "amp": False},
              "scan": {k: v for k, v in scan_cfg.items() if k != "precision"}}
    assert config_fingerprint(base) == config_fingerprint(before)
    assert config_fingerprint({**base, "train": {**train_cfg, "precision": "bf16"}}) != config_fingerprint(base)
    assert config_fingerprint({**base, "scan": {**scan_cfg, "precision": "bf16"}}) != config_fingerprint(base)
