"""One run, start to end, as its stages in order:

    data -> scan -> select -> (reuse an equivalent run) -> truncate -> tune -> train (evaluates
    every epoch) -> record

The run dir (skip a complete run, resume a checkpoint, the equivalent-run registry, the result
files) is hsv_exp.run_dir; the scan and its cache are hsv_exp.scan; the compute accounting is
hsv_exp.compute. Each stage is one function below, called in order by `_pipeline`.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from hsv_exp import data as data_lib
from hsv_exp import head_init
from hsv_exp import run_dir as run_dir_lib
from hsv_exp.backbone import load_backbone, load_tokenizer, num_layers
from hsv_exp.classifier import LayerClassifier
from hsv_exp.compute import model_accounting, with_regularizer, with_stage1
from hsv_exp.config import Config
from hsv_exp.run_dir import config_fingerprint, identity, semantic_config  # noqa: F401  (semantic_config, identity: also imported from here)
from hsv_exp.precision import resolve
from hsv_exp.scan import print_scan, run_scan
from hsv_exp.selection import Selection, select_layers
from hsv_exp.strategy_config import stage_epochs
from hsv_exp.tracking import make_tracker
from hsv_exp.train import TrainResult, pick_device, train
from hsv_exp.truncation import Truncated, truncate_model
from hsv_exp.tuning import TRAINERS, apply_method

log = logging.getLogger("hsv_exp")


def run_name(cfg: Config) -> str:
    return f"{cfg.task.name}-{cfg.model.name}-{cfg.tuning.name}-{cfg.select.name}-k{cfg.select.k}-s{cfg.seed}"


@dataclass
class RunContext:
    """What every stage may read: the config, where files go, the device and the tracker."""

    cfg: Config
    config_dict: dict  # the resolved config as written into metrics.json
    run_dir: Path
    sweep_dir: Path | None  # set in a multirun: the sweep's shared scans, registry and W&B dir
    fingerprint: str
    device: torch.device
    tracker: object
    started: float  # time.perf_counter() when run() began: history's time/elapsed_s counts from it


@dataclass
class RunData:
    full_train: data_lib.Split  # the whole train split (the scan may read it)
    train: data_lib.Split  # the examples training uses
    eval_splits: dict[str, data_lib.Split]
    task: object  # the TaskConfig with the label names the data was read with


# ---------------------------------------------------------------- stages, in order
def load_data(cfg: Config) -> RunData:
    """The data stage: the train split, its stratified subsample (task.max_train_examples), the eval splits."""
    full_train = train_split = data_lib.load_split(cfg.task, cfg.task.train_split)
    task = data_lib.with_label_names(cfg.task, full_train)  # task=custom: the names inferred from the train file
    if task.max_train_examples:
        classes = data_lib.class_ids(train_split.labels, task)
        train_split = train_split.subset(data_lib.stratified_subsample(classes, task.max_train_examples, cfg.seed))
    eval_splits = {}
    for name in task.eval_splits:
        split = data_lib.load_split(task, name)
        if task.max_eval_examples and len(split) > task.max_eval_examples:
            split = split.subset(np.arange(task.max_eval_examples))  # the first N, the same for every seed
        eval_splits[name] = split
    return RunData(full_train, train_split, eval_splits, task)


def scan_stage(ctx: RunContext, backbone, tokenizer, data: RunData) -> dict | None:
    """nu per layer, when the stage or the selection needs it (or scan.always)."""
    cfg = ctx.cfg
    if not (cfg.stage == "scan" or cfg.select.name == "variability" or cfg.scan.always):
        return None
    split = data.full_train if cfg.scan.full_split else data.train
    scan = run_scan(cfg, backbone, tokenizer, split, ctx.device, ctx.run_dir, ctx.sweep_dir)
    ctx.tracker.log_variability(scan["scores"], cfg.metric.name)
    return scan


def select_stage(ctx: RunContext, total_layers: int, scan: dict | None) -> Selection:
    selection = select_layers(ctx.cfg.select, total_layers, scan["scores"] if scan else None)
    if scan is not None:
        print_scan(scan, selection)
        ctx.tracker.summary({"head_layer": selection.head_layer})
    log.info("selection %s: head on layer %d of %d, tuned layers %s (%s)", ctx.cfg.select.name, selection.head_layer,
             total_layers, list(selection.tuned_layers), selection.rule)
    return selection


def registry_of(ctx: RunContext, selection: Selection) -> Path | None:
    """This run's entry in the sweep's equivalent-run registry; None outside a sweep or when reuse is off."""
    if ctx.sweep_dir is None or not ctx.cfg.reuse_equivalent_runs:
        return None
    return run_dir_lib.registry_path(ctx.sweep_dir, ctx.config_dict, selection)


def reuse_stage(ctx: RunContext, selection: Selection, registry: Path | None) -> dict | None:
    """The results of a completed equivalent run of this sweep, re-labelled as this run's; None if none."""
    source = run_dir_lib.equivalent_source(registry, ctx.sweep_dir, ctx.run_dir) if registry is not None else None
    if source is None:
        return None
    relative, previous = source
    metrics = {**previous, "status": "complete", **identity(ctx.cfg), "fingerprint": ctx.fingerprint,
               "head_layer": selection.head_layer, "tuned_layers": list(selection.tuned_layers),
               "reused_from": relative, "config": ctx.config_dict}
    ctx.tracker.summary({"head_layer": selection.head_layer, "reused": True})
    log_summary(ctx.tracker, metrics)
    run_dir_lib.write_metrics(ctx.run_dir, metrics)
    log.info("same layers, data and seed as the completed run %s: reusing its results (reuse_equivalent_runs=false "
             "to train again)", ctx.sweep_dir / relative)
    return metrics


def new_classifier(cfg: Config, task, encoder, selection: Selection, train_labels: np.ndarray) -> LayerClassifier:
    """The classifier on `encoder`; a regression head's output starts at the labels' mean (train.regression_bias)."""
    model = LayerClassifier(encoder, selection, task.num_labels, cfg.metric.pooling, cfg.train.dropout, cfg.model.head)
    if task.is_regression and cfg.train.regression_bias == "label_mean":
        with torch.no_grad():
            model.output_layer.bias.fill_(float(np.mean(train_labels)))
    return model


def build_model(cfg: Config, task, truncated: Truncated, selection: Selection, train_labels: np.ndarray) -> LayerClassifier:
    """The tune stage: the classifier on the truncated encoder, then what the tuning method trains."""
    torch.manual_seed(cfg.seed)  # the head's init depends on the seed only
    model = new_classifier(cfg, task, truncated.encoder, selection, train_labels)
    apply_method(model, cfg.tuning)
    return model


@dataclass
class Trained:
    model: LayerClassifier  # the model that was fine-tuned (stage 2 of a head_init)
    result: TrainResult  # its training (history: fine-tuning epochs only)
    history: list[dict]  # every epoch, head_init's marked stage=head_init (== result.history without one)
    train_encoded: data_lib.Encoded
    wall_s: float  # training with its per-epoch evaluation, both stages, summed over resumes (TrainResult.wall_s)
    head_init: dict | None = None  # head_init's summary and compute, when it ran


def train_stage(ctx: RunContext, truncated: Truncated, selection: Selection, tokenizer, data: RunData) -> Trained:
    """Training with a dev evaluation every epoch, after the head_init stage when there is one."""
    cfg = ctx.cfg
    train_encoded = data_lib.encode(tokenizer, data.train, cfg.train.max_length)
    eval_encoded = {name: data_lib.encode(tokenizer, split, cfg.train.max_length) for name, split in data.eval_splits.items()}
    train_cfg = replace(cfg.train, lr=cfg.body_lr)
    precision = resolve(cfg.train.precision, ctx.device)
    log.info("precision %s (train.precision=%s): %s", precision.name, cfg.train.precision, precision.reason)
    ctx.tracker.summary({"precision": precision.name})
    common = dict(run_dir=ctx.run_dir, progress=sys.stderr.isatty(), precision=precision, regularizer=cfg.regularizer,
                  started=ctx.started)
    if not cfg.head_init.enabled:
        model = build_model(cfg, data.task, truncated, selection, train_encoded.labels)
        trainer = TRAINERS.get(cfg.tuning.name, train)  # tuning=linear_probe: a closed-form fit instead of SGD
        result = trainer(model, train_encoded, eval_encoded, data.task, train_cfg, cfg.seed, tokenizer.pad_token_id,
                         log=ctx.tracker.log, **common)
        return Trained(model, result, result.history, train_encoded, result.wall_s)
    build = lambda chosen: new_classifier(cfg, data.task, copy.deepcopy(truncated.encoder), chosen, train_encoded.labels)  # noqa: E731
    chain = head_init.train_with_head_init(
        cfg.head_init, build, selection, lambda model: apply_method(model, cfg.tuning), train_encoded, eval_encoded,
        data.task, train_cfg, cfg.seed, tokenizer.pad_token_id, log_fn=ctx.tracker.log, run_dir=ctx.run_dir,
        progress=common["progress"], train_kwargs={key: common[key] for key in ("precision", "regularizer", "started")})
    summary = {**{key: value for key, value in chain.head_init.summary().items() if key not in ("history", "compute")},
               "stage1_compute": chain.head_init.compute,  # (its history is in metrics' history)
               "compute": head_init.compute_summary(chain, cfg.tuning, train_encoded, train_cfg)}
    return Trained(chain.model, chain.train, chain.history, train_encoded, chain.wall_s, summary)


def record(ctx: RunContext, selection: Selection, truncated: Truncated, trained: Trained, data: RunData,
           registry: Path | None) -> dict:
    """The record stage: metrics.json (scores, compute, parameters), the registry entry, checkpoint clean-up."""
    cfg, result = ctx.cfg, trained.result
    mean_len = float(np.mean([len(feature["input_ids"]) for feature in trained.train_encoded.features]))
    compute = with_regularizer(model_accounting(trained.model, selection, truncated, cfg.tuning, mean_len), result.regularizer)
    compute.update({"train_time_s": result.train_time_s, "train_wall_s": trained.wall_s, "epoch_times_s": result.epoch_times_s,
                    "peak_memory_mb": result.peak_memory_mb, "device": str(ctx.device), "precision": result.precision})
    if trained.head_init is not None:  # the run's training cost is both stages'
        stage1 = trained.head_init
        compute = with_stage1(compute, stage1["stage1_compute"], *stage_epochs(cfg.head_init, cfg.train.epochs))
        compute.update({**stage1["compute"], "stage2_train_time_s": result.train_time_s,
                        "train_time_s": stage1["compute"]["train_time_s_total"]})
    main_key = f"{cfg.task.eval_splits[0]}/{cfg.task.main_metric}"
    metrics = {
        "status": "complete", **identity(cfg), "fingerprint": ctx.fingerprint,
        "head_layer": selection.head_layer, "tuned_layers": list(selection.tuned_layers), "num_layers": truncated.full_layers,
        "main_metric": cfg.task.main_metric, "optimized_metric": main_key,
        "best": result.best, "last": result.last, "history": trained.history, "compute": compute,
        "resumed_from": result.resumed_from, "num_train_examples": len(data.train),
        # the wall-clock time run() began, so another process can put history's time/elapsed_s on its own clock
        "started_unix_s": time.time() - (time.perf_counter() - ctx.started),
        **({"head_init": trained.head_init} if trained.head_init is not None else {}),
        "config": ctx.config_dict,
    }
    log_summary(ctx.tracker, metrics)
    run_dir_lib.write_metrics(ctx.run_dir, metrics)
    if registry is not None:
        run_dir_lib.register(registry, ctx.sweep_dir, ctx.run_dir)
    if not cfg.train.keep_checkpoint:
        run_dir_lib.clean_checkpoint(ctx.run_dir)
    log.info("dev %s: best %.4f (epoch %d), last %.4f | training FLOPs %.1f%% of full fine-tuning (saving %.1f%%), "
             "inference FLOPs saving %.1f%% | trainable %d of %d params | %.1fs, peak %.0f MB",
             cfg.task.main_metric, result.best[main_key], result.best["epoch"], result.last[main_key],
             100 * compute["train_flops_fraction"], compute["train_flops_saving_pct"], compute["inference_flops_saving_pct"],
             compute["trainable_params"], truncated.full_params, compute["train_time_s"], result.peak_memory_mb)
    return metrics


def log_summary(tracker, metrics: dict) -> None:
    tracker.summary({f"best/{key}": value for key, value in metrics["best"].items()})
    tracker.summary({f"last/{key}": value for key, value in metrics["last"].items()})
    tracker.summary({f"compute/{key}": value for key, value in metrics["compute"].items() if not isinstance(value, (list, dict))})


# ---------------------------------------------------------------- the run
def _pipeline(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    tokenizer = load_tokenizer(cfg.model)
    backbone = load_backbone(cfg.model, seed=cfg.seed)
    data = load_data(cfg)
    ctx.cfg = cfg = replace(cfg, task=data.task)
    scan = scan_stage(ctx, backbone, tokenizer, data)
    if cfg.stage == "scan":
        print_scan(scan, None)
        return scan
    selection = select_stage(ctx, num_layers(backbone), scan)
    registry = registry_of(ctx, selection)
    reused = reuse_stage(ctx, selection, registry)
    if reused is not None:
        return reused
    truncated = truncate_model(backbone, selection.head_layer)
    trained = train_stage(ctx, truncated, selection, tokenizer, data)  # tune (after head_init), then train
    return record(ctx, selection, truncated, trained, data, registry)


def run(cfg: Config, config_dict: dict, run_dir: Path, job_type: str | None = None, sweep_dir: Path | None = None) -> dict:
    """Execute `cfg` in `run_dir`; returns the metrics dict (also written to metrics.json).

    `sweep_dir` (set in a multirun) is shared by the sweep's runs: their W&B runs, scans and the
    registry of equivalent runs live there."""
    started = time.perf_counter()
    fingerprint = config_fingerprint(config_dict)
    previous = run_dir_lib.start(run_dir, cfg, fingerprint)
    if previous is not None:
        return previous
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.train.device)
    tracker = make_tracker(cfg.logger, sweep_dir or run_dir, config_dict, run_name(cfg), cfg.logger.group or cfg.study,
                           [*cfg.logger.tags, *cfg.tags, f"task:{cfg.task.name}", f"model:{cfg.model.name}",
                            f"tuning:{cfg.tuning.name}", f"select:{cfg.select.name}"], job_type or cfg.stage)
    try:
        result = _pipeline(RunContext(cfg, config_dict, run_dir, sweep_dir, fingerprint, device, tracker, started))
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    tracker.finish()
    return result
