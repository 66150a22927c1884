"""Training: the frozen cache changes nothing but speed, runs are deterministic, and a run killed
with SIGTERM at a random step resumes to exactly the metrics of an uninterrupted run."""

import json
import os
import random
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from hsv_exp.classifier import LayerClassifier
from hsv_exp.truncation import truncate
from hsv_exp.config import SelectConfig, TaskConfig, TrainConfig, TuningConfig
from hsv_exp.data import Encoded
from hsv_exp.frozen_cache import prefix_states, split_forward
from hsv_exp.selection import select_layers
from hsv_exp.train import epoch_order, train
from hsv_exp.tuning import METHODS

from conftest import REPO, TINY_KWARGS, sigterm_at_step, tiny_model

TASK = TaskConfig(name="custom", text_fields=["text"], label_names=["a", "b"], metrics=["accuracy"], main_metric="accuracy")


def toy_data(n: int, seed: int) -> Encoded:
    """Token sequences of varied length whose label depends on which tokens occur."""
    rng = np.random.default_rng(seed)
    features, labels = [], []
    for _ in range(n):
        length = int(rng.integers(4, 14))
        label = int(rng.integers(0, 2))
        ids = [1, *rng.integers(10 + 40 * label, 50 + 40 * label, size=length - 2).tolist(), 2]
        features.append({"input_ids": ids, "attention_mask": [1] * length, "special_tokens_mask": [1] + [0] * (length - 2) + [1]})
        labels.append(label)
    return Encoded(features, np.array(labels))


def fit(cache: str, tmp_path, select=SelectConfig(name="manual", head_layer=3, k=1), tuning="full", epochs=3):
    torch.manual_seed(0)
    selection = select_layers(select, 4)
    model = LayerClassifier(truncate(tiny_model("bert"), selection.head_layer), selection, num_labels=2)
    METHODS[tuning](model, TuningConfig(name=tuning))
    # fp32: these tests compare runs to 1e-5, tighter than bf16 rounding (train.precision=auto may pick it)
    cfg = TrainConfig(lr=5e-3, epochs=epochs, batch_size=8, cache_frozen=cache, cache_memory_budget_mb=0 if cache == "disk" else 2048,
                      precision="fp32")
    result = train(model, toy_data(60, 0), {"dev": toy_data(30, 1)}, TASK, cfg, seed=3, pad_token_id=0, run_dir=tmp_path / cache, progress=False)
    return model, result


def test_frozen_cache_equals_uncached_run(tmp_path):
    runs = {mode: fit(mode, tmp_path) for mode in ("off", "memory", "disk")}
    reference_model, reference = runs["off"]
    assert reference.cache is None
    for mode in ("memory", "disk"):
        model, result = runs[mode]
        assert result.cache["mode"] == mode
        for ours, theirs in zip(result.history, reference.history):
            assert ours["train/loss"] == pytest.approx(theirs["train/loss"], rel=1e-4, abs=1e-6)
            assert ours["dev/accuracy"] == theirs["dev/accuracy"]
        for (name, a), (_, b) in zip(model.named_parameters(), reference_model.named_parameters()):
            if name.endswith("key.bias"):
                continue  # its gradient is zero in exact arithmetic (softmax ignores it): Adam turns rounding noise into lr-sized steps
            assert torch.allclose(a, b, atol=1e-5), name
    assert not (tmp_path / "disk" / "frozen_cache.npy").exists()  # cleaned up after training


@pytest.mark.parametrize("arch", list(TINY_KWARGS))
def test_a_window_from_layer_1_over_frozen_embeddings_runs_cached_on_every_architecture(arch, tmp_path):
    """The frozen prefix is the embeddings alone (select=top k=L; MRPC's clipped window at l* = 1).
    DeBERTa-v2's encoder cannot run zero layers: this crashed in prefix_states (UnboundLocalError)."""
    selection = select_layers(SelectConfig(name="top", k=4), 4)
    assert selection.first_tuned == 1 and not selection.tune_embeddings
    model = LayerClassifier(truncate(tiny_model(arch), 4), selection, num_labels=2)
    METHODS["full"](model, TuningConfig())
    model.eval()
    ids = torch.randint(5, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    inputs["attention_mask"][1, -3:] = 0  # padding: DeBERTa-v2's embeddings zero padded positions
    with torch.no_grad():
        embedded = model.backbone(**inputs, output_hidden_states=True).hidden_states[0]
        assert torch.equal(prefix_states(model, inputs), embedded)
        assert torch.allclose(split_forward(model, inputs), model(**inputs), atol=1e-6)
    cfg = TrainConfig(lr=5e-3, epochs=2, batch_size=4, cache_frozen="memory", precision="fp32")
    result = train(model, toy_data(12, 0), {"dev": toy_data(8, 1)}, TASK, cfg, seed=0, pad_token_id=0, run_dir=tmp_path, progress=False)
    assert result.cache["mode"] == "memory" and len(result.history) == 2


@pytest.mark.parametrize("first_tuned", [1, 2, 3])
def test_split_forward_equals_the_full_forward_on_deberta_v2_with_its_convolution(first_tuned):
    """DeBERTa-v2's encoder runs a convolution after its first layer (conv_kernel_size > 0, as in
    deberta-v2-xlarge): a window starting above layer 1 must not run it a second time."""
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(0)
    config = AutoConfig.for_model("deberta-v2", **TINY_KWARGS["deberta-v2"], conv_kernel_size=3)
    backbone = AutoModel.from_config(config).eval()
    assert backbone.encoder.conv is not None
    selection = select_layers(SelectConfig(name="manual", head_layer=4, last_tuned_layer=4, k=5 - first_tuned), 4)
    assert selection.first_tuned == first_tuned
    model = LayerClassifier(truncate(backbone, 4), selection, num_labels=2).eval()
    ids = torch.randint(5, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    inputs["attention_mask"][1, -3:] = 0
    with torch.no_grad():
        assert torch.allclose(split_forward(model, inputs), model(**inputs), atol=1e-6)
    assert model.backbone.encoder.conv is not None  # put back after the split forward


def test_training_learns_and_is_deterministic(tmp_path):
    _, first = fit("off", tmp_path / "a", select=SelectConfig(name="top", k=2), epochs=8)
    _, second = fit("off", tmp_path / "b", select=SelectConfig(name="top", k=2), epochs=8)
    strip = lambda history: [{k: v for k, v in record.items() if k != "epoch_time_s"} for record in history]
    assert strip(first.history) == strip(second.history)
    assert first.history[-1]["train/loss"] < first.history[0]["train/loss"]
    assert first.best["dev/accuracy"] > 0.75


def test_elapsed_time_counts_from_the_run_start_to_each_evaluation_end(tmp_path):
    """time/elapsed_s (hsv_exp.run passes its start): after the work before training, every epoch's
    training and its evaluation; absent when no start is given."""
    _, plain = fit("memory", tmp_path, epochs=1)
    assert all("time/elapsed_s" not in record for record in plain.history)
    selection = select_layers(SelectConfig(name="top", k=2), 4)
    torch.manual_seed(0)
    model = LayerClassifier(truncate(tiny_model("bert"), selection.head_layer), selection, num_labels=2)
    before = 5.0  # seconds the run spent before training (model load, data, scan)
    result = train(model, toy_data(60, 0), {"dev": toy_data(30, 1)}, TASK, TrainConfig(epochs=3, batch_size=8, precision="fp32"),
                   seed=3, pad_token_id=0, progress=False, started=time.perf_counter() - before)
    elapsed = [record["time/elapsed_s"] for record in result.history]
    assert elapsed[0] >= before + result.epoch_times_s[0]
    assert all(later - earlier >= epoch_time for earlier, later, epoch_time in zip(elapsed, elapsed[1:], result.epoch_times_s[1:]))


def write_toy_csv(path, n, seed):
    rng = random.Random(seed)
    words = {"a": "good great fine nice happy", "b": "bad awful poor sad ugly"}
    lines = ["text,label"]
    for _ in range(n):
        label = rng.choice("ab")
        lines.append(" ".join(rng.choices(words[label].split(), k=rng.randint(3, 12))) + f",{label}")
    path.write_text("\n".join(lines) + "\n")


def cli(run_dir, data_dir, *extra):
    return [sys.executable, "-m", "hsv_exp", "model=tiny", "task=custom", "logger=none", f"hydra.run.dir={run_dir}",
            f"task.files.train={data_dir / 'train.csv'}", f"task.files.dev={data_dir / 'dev.csv'}", "task.label_names=[a,b]",
            "select=top", "select.k=2", "train.epochs=2", "train.batch_size=4", "train.lr=1e-3", "train.log_every_steps=1",
            "train.cache_frozen=off", *extra]


TIME_KEYS = ("epoch_time_s", "time/elapsed_s")  # wall-clock measurements: they differ between any two runs


def drop_time(record):
    return {k: v for k, v in record.items() if k not in TIME_KEYS}


def comparable(metrics):
    return {"best": drop_time(metrics["best"]), "last": drop_time(metrics["last"]),
            "history": [drop_time(record) for record in metrics["history"]], "head_layer": metrics["head_layer"]}


@pytest.mark.slow
def test_sigterm_at_a_random_step_then_resume_gives_identical_metrics(tmp_path):
    write_toy_csv(tmp_path / "train.csv", 120, 0)
    write_toy_csv(tmp_path / "dev.csv", 40, 1)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    reference = subprocess.run(cli(tmp_path / "ref", tmp_path), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-2000:]
    kill_at = random.Random().randint(3, 55)  # 30 steps per epoch: lands in either epoch
    assert sigterm_at_step(cli(tmp_path / "run", tmp_path), kill_at, env) == 143, f"killed at step {kill_at}"
    assert not (tmp_path / "run" / "metrics.json").exists()
    checkpoint = torch.load(tmp_path / "run" / "checkpoint" / "last.pt", weights_only=False)
    assert (checkpoint["epoch"] - 1) * 30 + checkpoint["step_in_epoch"] >= kill_at
    resumed = subprocess.run(cli(tmp_path / "run", tmp_path), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ours = json.loads((tmp_path / "run" / "metrics.json").read_text())
    theirs = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    assert ours["resumed_from"] is not None
    assert not (tmp_path / "run" / "checkpoint").exists()  # a complete run needs no checkpoint (train.keep_checkpoint)
    assert comparable(ours) == comparable(theirs), f"killed at step {kill_at}"
    assert ours["compute"]["train_wall_s"] >= ours["compute"]["train_time_s"]  # both processes count


def test_length_grouped_epoch_order_pads_less_and_is_a_seeded_permutation():
    lengths = np.random.default_rng(0).integers(5, 128, size=1000)
    padded = lambda order: sum(len(b) * lengths[b].max() for b in np.split(order, range(16, len(order), 16)))
    plain, grouped = epoch_order(lengths, 16, 0, 1, False), epoch_order(lengths, 16, 0, 1, True)
    assert sorted(grouped) == list(range(1000))
    assert padded(grouped) < 1.1 * lengths.sum() < padded(plain)
    assert (grouped == epoch_order(lengths, 16, 0, 1, True)).all()
    assert not (grouped == epoch_order(lengths, 16, 0, 2, True)).all()  # each epoch reshuffles


def test_wall_time_adds_up_over_a_resume(tmp_path, monkeypatch):
    """wall_s counts every process that trained the run: stopped after epoch 1's evaluation and
    resumed, the run's wall_s still holds both evaluations (each made 0.3 s slower here), not only
    the second process's share."""
    import signal

    import hsv_exp.train as train_module
    from hsv_exp.checkpoint import Preempted

    pause, evaluate, calls = 0.3, train_module.evaluate, []

    def slow_evaluation(*args, **kwargs):
        calls.append(1)
        time.sleep(pause)
        if len(calls) == 1:  # epoch 1 of 2 is evaluated: stop the process
            os.kill(os.getpid(), signal.SIGTERM)
        return evaluate(*args, **kwargs)

    def run():
        selection = select_layers(SelectConfig(name="top", k=2), 4)
        torch.manual_seed(0)
        model = LayerClassifier(truncate(tiny_model("bert"), selection.head_layer), selection, num_labels=2)
        return train(model, toy_data(24, 0), {"dev": toy_data(8, 1)}, TASK, TrainConfig(epochs=2, batch_size=8, precision="fp32"),
                     seed=3, pad_token_id=0, run_dir=tmp_path, progress=False)

    monkeypatch.setattr(train_module, "evaluate", slow_evaluation)
    with pytest.raises(Preempted):
        run()
    first = torch.load(tmp_path / "checkpoint" / "last.pt", weights_only=False)
    assert first["epoch"] == 2 and first["wall_s"] >= pause  # stopped at epoch 2's first step
    started = time.perf_counter()
    resumed = run()
    second = time.perf_counter() - started
    assert len(calls) == 2 and resumed.resumed_from["epoch"] == 2
    assert resumed.wall_s >= first["wall_s"] + pause  # both processes' evaluations
    assert first["wall_s"] + second >= resumed.wall_s > second  # more than the last process ran
    assert resumed.wall_s >= resumed.train_time_s


def test_a_signal_during_the_last_evaluation_is_not_lost(tmp_path, monkeypatch):
    """SIGTERM after the last optimizer step (while the last epoch is evaluated) still stops the run,
    with its checkpoint saved, instead of being dropped when training ends; rerunning it writes the
    same result as a run never signalled."""
    import signal

    import hsv_exp.train as train_module
    from hsv_exp.checkpoint import Preempted

    def run(run_dir):
        selection = select_layers(SelectConfig(name="top", k=2), 4)
        torch.manual_seed(0)
        model = LayerClassifier(truncate(tiny_model("bert"), selection.head_layer), selection, num_labels=2)
        return train(model, toy_data(24, 0), {"dev": toy_data(8, 1)}, TASK, TrainConfig(epochs=2, batch_size=8, precision="fp32"),
                     seed=3, pad_token_id=0, run_dir=run_dir, progress=False)

    reference = run(tmp_path / "ref")
    evaluate, calls = train_module.evaluate, []

    def signalled_in_the_last_evaluation(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # epoch 2 of 2: every step is done
            os.kill(os.getpid(), signal.SIGTERM)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", signalled_in_the_last_evaluation)
    with pytest.raises(Preempted):
        run(tmp_path / "run")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone again
    checkpoint = torch.load(tmp_path / "run" / "checkpoint" / "last.pt", weights_only=False)
    assert (checkpoint["epoch"], checkpoint["step_in_epoch"]) == (3, 0)  # training done, saved
    monkeypatch.setattr(train_module, "evaluate", evaluate)
    resumed = run(tmp_path / "run")
    assert [drop_time(r) for r in resumed.history] == [drop_time(r) for r in reference.history]
