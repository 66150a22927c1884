"""One run, start to end: data -> variability scan -> selection -> truncated model -> training.

Writes into the run dir (all atomically): variability.json after the scan, checkpoint/last.pt
during training, metrics.json only when the run completed. A run dir that already holds a
complete metrics.json for the same config is not run again (a relaunched sweep skips it); one
with a checkpoint resumes from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from hsv_exp import data as data_lib
from hsv_exp import variability
from hsv_exp.atomic import write_json_atomic
from hsv_exp.backbone import forward_kwargs, load_backbone, load_tokenizer, num_layers
from hsv_exp.classifier import LayerClassifier
from hsv_exp.compute import accounting
from hsv_exp.config import NOT_SEMANTIC, Config, drop_keys, fingerprint_view, keys_marked
from hsv_exp.errors import DataError, HsvError
from hsv_exp.selection import Selection, select_layers
from hsv_exp.tracking import make_tracker
from hsv_exp.train import TrainResult, pick_device, train
from hsv_exp.tuning import METHODS

log = logging.getLogger("hsv_exp")

def semantic_config(config: dict, drop: tuple[str, ...] = ()) -> dict:
    """The resolved config minus the keys that do not change what a run computes (NOT_SEMANTIC in
    the schema), and minus the groups in `drop`."""
    return drop_keys(fingerprint_view(config), (*keys_marked(NOT_SEMANTIC), *drop))


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_fingerprint(config: dict) -> str:
    return _digest(semantic_config(config))


def identity(cfg: Config) -> dict:
    """The fields every result file carries, so results can be grouped without the config."""
    return {"task": cfg.task.name, "model": cfg.model.name, "tuning": cfg.tuning.name, "select": cfg.select.name,
            "rule": cfg.select.rule, "k": cfg.select.k, "seed": cfg.seed, "metric": cfg.metric.name,
            "pooling": cfg.metric.pooling, "study": cfg.study}


def run_name(cfg: Config) -> str:
    return f"{cfg.task.name}-{cfg.model.name}-{cfg.tuning.name}-{cfg.select.name}-k{cfg.select.k}-s{cfg.seed}"


# ---------------------------------------------------------------- data
def load_data(cfg: Config) -> tuple[data_lib.Split, data_lib.Split, dict[str, data_lib.Split]]:
    """(whole train split, the train examples training uses, eval splits)."""
    full_train = train_split = data_lib.load_split(cfg.task, cfg.task.train_split)
    if cfg.task.max_train_examples:
        classes = data_lib.class_ids(train_split.labels, cfg.task)
        train_split = train_split.subset(data_lib.stratified_subsample(classes, cfg.task.max_train_examples, cfg.seed))
    eval_splits = {}
    for name in cfg.task.eval_splits:
        split = data_lib.load_split(cfg.task, name)
        if cfg.task.max_eval_examples and len(split) > cfg.task.max_eval_examples:
            split = split.subset(np.arange(cfg.task.max_eval_examples))  # the first N, the same for every seed
        eval_splits[name] = split
    return full_train, train_split, eval_splits


# ---------------------------------------------------------------- scan
def scan_key(cfg: Config, split: data_lib.Split, classes: np.ndarray) -> str:
    """What a scan's result depends on: the model, the metric, the tokenization length and the
    exact examples and classes scanned (hashed by content, so any two runs that scan the same
    data share one result)."""
    digest = hashlib.sha256()
    model = dataclasses.asdict(cfg.model) | ({"seed": cfg.seed} if cfg.model.random_init else {})
    digest.update(json.dumps([model, cfg.metric.name, cfg.metric.pooling, cfg.train.max_length], sort_keys=True).encode())
    digest.update(json.dumps(split.texts).encode())
    digest.update(np.ascontiguousarray(classes).tobytes())
    return digest.hexdigest()[:16]


def run_scan(cfg: Config, backbone, tokenizer, train_split: data_lib.Split, device: torch.device, run_dir: Path,
             sweep_dir: Path | None = None) -> dict:
    """nu per layer on the train data, written to <run_dir>/variability.json. Scans are also kept by
    content key in scan.cache_dir (default <sweep_dir>/scans/ in a sweep): each distinct scan runs once."""
    path = run_dir / "variability.json"
    settings = {"max_examples": cfg.scan.max_examples, "majority_fraction": cfg.scan.majority_fraction,
                "scan_seed": cfg.scan.seed, "full_split": cfg.scan.full_split, "metric": cfg.metric.name,
                "pooling": cfg.metric.pooling}
    classes = data_lib.class_ids(train_split.labels, cfg.task)
    if cfg.scan.max_examples or cfg.scan.majority_fraction:
        indices = data_lib.stratified_subsample(classes, cfg.scan.max_examples, cfg.scan.seed, cfg.scan.majority_fraction)
        train_split, classes = train_split.subset(indices), classes[indices]
    key = scan_key(cfg, train_split, classes)
    cache_dir = Path(cfg.scan.cache_dir) if cfg.scan.cache_dir else (sweep_dir / "scans" if sweep_dir is not None else None)
    for cached in (path, *([cache_dir / f"{key}.json"] if cache_dir is not None else [])):
        if cached.is_file():
            previous = json.loads(cached.read_text())
            if previous.get("scan_key") == key:
                log.info("variability scan: reusing %s", cached)
                result = {**previous, **identity(cfg), **settings}
                if cached != path:
                    write_json_atomic(path, result)
                return result
    class_values = np.unique(classes)
    if cfg.task.is_regression:
        class_names = [f"{value * cfg.task.regression_bin_width:g}" for value in class_values]
    else:
        missing = [name for index, name in enumerate(cfg.task.label_names) if index not in class_values]
        if missing:
            raise DataError(f"variability scan: class(es) {missing} have no examples in the scanned train data")
        class_names = list(cfg.task.label_names)
    class_index = {value: index for index, value in enumerate(class_values)}
    dense_classes = torch.tensor([class_index[value] for value in classes])
    encoded = data_lib.encode(tokenizer, train_split, cfg.train.max_length)
    batches = data_lib.loader(encoded, cfg.scan.batch_size, tokenizer.pad_token_id, by_length=True)
    scores, info = variability.scan(
        backbone.to(device), batches, lambda batch: dense_classes[batch["index"].cpu()], len(class_values),
        cfg.metric.pooling, cfg.metric.name, device, forward_kwargs(backbone), progress=sys.stderr.isatty(),
    )
    result = {**identity(cfg), **settings, "layers": list(range(len(scores))), "scores": scores,
              "num_examples": len(train_split), "class_counts": dict(zip(class_names, info["class_counts"])),
              "scan_seconds": info["scan_seconds"], "scan_key": key}
    write_json_atomic(path, result)
    if cache_dir is not None:
        write_json_atomic(cache_dir / f"{key}.json", result)
    return result


def print_scan(scan: dict, selection: Selection | None) -> None:
    lines = [f"{scan['metric']} per layer ({scan['pooling']} pooling, {scan['num_examples']} examples, {scan['scan_seconds']:.1f}s):"]
    best = min(range(1, len(scan["scores"])), key=lambda layer: scan["scores"][layer])
    for layer, score in zip(scan["layers"], scan["scores"]):
        marks = []
        if layer == best:
            marks.append("argmin")
        if selection is not None and layer == selection.head_layer:
            marks.append("head")
        if selection is not None and layer in selection.tuned_layers:
            marks.append("tuned")
        lines.append(f"  layer {layer:2d}  {score:12.5g}  {' '.join(marks)}")
    log.info("\n".join(lines))


def log_summary(tracker, metrics: dict) -> None:
    tracker.summary({f"best/{key}": value for key, value in metrics["best"].items()})
    tracker.summary({f"last/{key}": value for key, value in metrics["last"].items()})
    tracker.summary({f"compute/{key}": value for key, value in metrics["compute"].items() if not isinstance(value, list)})


# ---------------------------------------------------------------- equivalent runs
def equivalent_key(config_dict: dict, selection: Selection) -> str:
    """Two runs with the same key train the same model on the same data with the same seed: the
    config minus how the layers were chosen (select, scan), plus the layers that were chosen."""
    semantic = semantic_config(config_dict, drop=("select", "scan"))
    semantic["layers"] = [selection.head_layer, list(selection.tuned_layers), selection.tune_embeddings]
    return _digest(semantic)


def reuse_equivalent(cfg: Config, registry: Path, sweep_dir: Path, run_dir: Path, fingerprint: str, config_dict: dict,
                     selection: Selection, tracker) -> dict | None:
    """The results of a completed equivalent run of this sweep, re-labelled as this run's; None if none."""
    if not registry.is_file():
        return None
    relative = json.loads(registry.read_text())["run_dir"]
    source = sweep_dir / relative
    source_metrics = source / "metrics.json"
    if source.resolve() == run_dir.resolve() or not source_metrics.is_file():
        return None
    previous = json.loads(source_metrics.read_text())
    if previous.get("status") != "complete":
        return None
    metrics = {**previous, "status": "complete", **identity(cfg), "fingerprint": fingerprint,
               "head_layer": selection.head_layer, "tuned_layers": list(selection.tuned_layers),
               "reused_from": relative, "config": config_dict}
    tracker.summary({"head_layer": selection.head_layer, "reused": True})
    log_summary(tracker, metrics)
    write_json_atomic(run_dir / "metrics.json", metrics)
    log.info("same layers, data and seed as the completed run %s: reusing its results (reuse_equivalent_runs=false to train again)", source)
    return metrics


# ---------------------------------------------------------------- the run
def run(cfg: Config, config_dict: dict, run_dir: Path, job_type: str | None = None, sweep_dir: Path | None = None) -> dict:
    """Execute `cfg` in `run_dir`; returns the metrics dict (also written to metrics.json).

    `sweep_dir` (set in a multirun) is shared by the sweep's runs: their W&B runs, scans and the
    registry of equivalent runs live there."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = config_fingerprint(config_dict)
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file() and cfg.resume:
        previous = json.loads(metrics_path.read_text())
        if previous.get("status") == "complete" and previous.get("fingerprint") == fingerprint:
            log.info("run already complete in %s: skipping (resume=false to run again)", run_dir)
            return previous
        raise HsvError(f"{metrics_path} holds a run with a different config; use another hydra.run.dir or delete it")
    (run_dir / "failed.json").unlink(missing_ok=True)
    marker = run_dir / "run.json"  # which config this dir's checkpoint belongs to
    if marker.is_file() and json.loads(marker.read_text()).get("fingerprint") != fingerprint and (run_dir / "checkpoint").exists():
        raise HsvError(f"{run_dir} holds a checkpoint of a run with a different config; use another hydra.run.dir or delete it")
    write_json_atomic(marker, {**identity(cfg), "fingerprint": fingerprint})

    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.train.device)
    tracker = make_tracker(cfg.logger, sweep_dir or run_dir, config_dict, run_name(cfg), cfg.logger.group or cfg.study,
                           [*cfg.logger.tags, *cfg.tags, f"task:{cfg.task.name}", f"model:{cfg.model.name}",
                            f"tuning:{cfg.tuning.name}", f"select:{cfg.select.name}"], job_type or cfg.stage)
    try:
        result = _run(cfg, run_dir, device, tracker, fingerprint, config_dict, sweep_dir)
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    tracker.finish()
    return result


def _run(cfg: Config, run_dir: Path, device: torch.device, tracker, fingerprint: str, config_dict: dict,
         sweep_dir: Path | None) -> dict:
    tokenizer = load_tokenizer(cfg.model)
    backbone = load_backbone(cfg.model, seed=cfg.seed)
    total_layers = num_layers(backbone)
    full_train, train_split, eval_splits = load_data(cfg)

    scan = None
    if cfg.stage == "scan" or cfg.select.name == "variability" or cfg.scan.always:
        scan_split = full_train if cfg.scan.full_split else train_split
        scan = run_scan(cfg, backbone, tokenizer, scan_split, device, run_dir, sweep_dir)
        tracker.log_variability(scan["scores"], None, cfg.metric.name)
    if cfg.stage == "scan":
        print_scan(scan, None)
        return scan

    selection = select_layers(cfg.select, total_layers, scan["scores"] if scan else None)
    if scan is not None:
        print_scan(scan, selection)
        tracker.summary({"head_layer": selection.head_layer})
    log.info("selection %s: head on layer %d of %d, tuned layers %s (%s)", cfg.select.name, selection.head_layer,
             total_layers, list(selection.tuned_layers), selection.rule)
    registry = None
    if sweep_dir is not None and cfg.reuse_equivalent_runs:
        registry = sweep_dir / "equivalent" / f"{equivalent_key(config_dict, selection)}.json"
        reused = reuse_equivalent(cfg, registry, sweep_dir, run_dir, fingerprint, config_dict, selection, tracker)
        if reused is not None:
            return reused

    total_params_full = sum(parameter.numel() for parameter in backbone.parameters())
    torch.manual_seed(cfg.seed)  # the head's init depends on the seed only
    model = LayerClassifier(backbone, selection, cfg.task.num_labels, cfg.metric.pooling, cfg.train.dropout)
    METHODS[cfg.tuning.name](model, cfg.tuning)
    trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    injected = sum(parameter.numel() for name, parameter in model.named_parameters()
                   if any(prefix in name for prefix in ("adapter_", "lora_")))
    prefix_keys = cfg.tuning.prefix_length if cfg.tuning.name in ("prefix", "mam") else 0

    train_encoded = data_lib.encode(tokenizer, train_split, cfg.train.max_length)
    eval_encoded = {name: data_lib.encode(tokenizer, split, cfg.train.max_length) for name, split in eval_splits.items()}
    started = time.perf_counter()
    train_cfg = replace(cfg.train, lr=cfg.tuning.lr or cfg.train.lr)
    result: TrainResult = train(model, train_encoded, eval_encoded, cfg.task, train_cfg, cfg.seed, tokenizer.pad_token_id,
                                run_dir=run_dir, log=tracker.log, progress=sys.stderr.isatty())
    wall = time.perf_counter() - started

    mean_len = float(np.mean([len(feature["input_ids"]) for feature in train_encoded.features]))
    config = backbone.config
    compute = accounting(selection, config.hidden_size, getattr(config, "intermediate_size", 4 * config.hidden_size),
                         mean_len, full_layer_weights_train=cfg.tuning.name == "full", injected_params=injected,
                         prefix_keys=prefix_keys)
    compute.update({
        "total_params": total_params_full,
        "params_kept": sum(parameter.numel() for parameter in model.parameters()),
        "trainable_params": trainable,
        "trainable_pct": 100.0 * trainable / total_params_full,
        "train_time_s": result.train_time_s,
        "train_wall_s": wall,
        "epoch_times_s": result.epoch_times_s,
        "peak_memory_mb": result.peak_memory_mb,
        "device": str(device),
    })
    main_key = f"{cfg.task.eval_splits[0]}/{cfg.task.main_metric}"
    metrics = {
        "status": "complete", **identity(cfg), "fingerprint": fingerprint,
        "head_layer": selection.head_layer, "tuned_layers": list(selection.tuned_layers), "num_layers": total_layers,
        "main_metric": cfg.task.main_metric, "optimized_metric": main_key,
        "best": result.best, "last": result.last, "history": result.history, "compute": compute,
        "resumed_from": result.resumed_from, "num_train_examples": len(train_split),
        "config": config_dict,
    }
    log_summary(tracker, metrics)
    write_json_atomic(run_dir / "metrics.json", metrics)
    if registry is not None:
        write_json_atomic(registry, {"run_dir": str(run_dir.resolve().relative_to(sweep_dir.resolve()))})
    if not cfg.train.keep_checkpoint:
        (run_dir / "checkpoint" / "last.pt").unlink(missing_ok=True)
        if (run_dir / "checkpoint").is_dir() and not any((run_dir / "checkpoint").iterdir()):
            (run_dir / "checkpoint").rmdir()
    log.info("dev %s: best %.4f (epoch %d), last %.4f | training FLOPs %.1f%% of full fine-tuning (saving %.1f%%), "
             "inference FLOPs saving %.1f%% | trainable %d of %d params | %.1fs, peak %.0f MB",
             cfg.task.main_metric, result.best[main_key], result.best["epoch"], result.last[main_key],
             100 * compute["train_flops_fraction"], compute["train_flops_saving_pct"], compute["inference_flops_saving_pct"],
             trainable, total_params_full, result.train_time_s, result.peak_memory_mb)
    return metrics
