"""The scan stage: nu per layer on a run's train data, keyed by content and cached.

Writes <run_dir>/variability.json. Scans are also kept by content key in scan.cache_dir (default
<sweep_dir>/scans/ in a sweep), so each distinct scan runs once however many runs read it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from hsv_exp import data as data_lib
from hsv_exp import variability
from hsv_exp.atomic import write_json_atomic
from hsv_exp.backbone import forward_kwargs
from hsv_exp.config import Config, TaskConfig
from hsv_exp.errors import DataError
from hsv_exp.run_dir import identity
from hsv_exp.selection import Selection, pick_head_layer

log = logging.getLogger("hsv_exp")


def scan_key(cfg: Config, split: data_lib.Split, classes: np.ndarray) -> str:
    """What a scan's result depends on: the model, the metric, the tokenization length and the
    exact examples and classes scanned (hashed by content, so any two runs that scan the same
    data share one result)."""
    digest = hashlib.sha256()
    model = dataclasses.asdict(cfg.model) | ({"seed": cfg.seed} if cfg.model.random_init else {})
    del model["head"]  # the classifier head is not part of what the scan reads
    settings = [model, cfg.metric.name, cfg.metric.pooling, cfg.train.max_length]
    if cfg.scan.precision != "fp32":  # fp32 scans made before scan.precision existed keep their key
        settings.append(cfg.scan.precision)
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(json.dumps(split.texts).encode())
    digest.update(np.ascontiguousarray(classes).tobytes())
    return digest.hexdigest()[:16]


def _settings(cfg: Config) -> dict:
    return {"max_examples": cfg.scan.max_examples, "majority_fraction": cfg.scan.majority_fraction,
            "scan_seed": cfg.scan.seed, "full_split": cfg.scan.full_split, "metric": cfg.metric.name,
            "pooling": cfg.metric.pooling}


def cache_dir_of(cfg: Config, sweep_dir: Path | None) -> Path | None:
    if cfg.scan.cache_dir:
        return Path(cfg.scan.cache_dir)
    return sweep_dir / "scans" if sweep_dir is not None else None


def _cached(cfg: Config, key: str, path: Path, cache_dir: Path | None) -> dict | None:
    """A previous scan with this content key (the run dir's own, then the cache's), as this run's."""
    for cached in (path, *([cache_dir / f"{key}.json"] if cache_dir is not None else [])):
        if cached.is_file():
            previous = json.loads(cached.read_text())
            if previous.get("scan_key") == key:
                log.info("variability scan: reusing %s", cached)
                result = {**previous, **identity(cfg), **_settings(cfg)}
                if cached != path:
                    write_json_atomic(path, result)
                return result
    return None


def class_names(task: TaskConfig, class_values: np.ndarray, labels: np.ndarray) -> list[str]:
    """Names of the scanned classes (`labels`: those the class ids were computed from); every
    labelled class must occur in the scanned data."""
    if task.is_regression:
        return [f"{score:g}" for score in data_lib.class_scores(labels, task, class_values)]
    missing = [name for index, name in enumerate(task.label_names) if index not in class_values]
    if missing:
        raise DataError(f"variability scan: class(es) {missing} have no examples in the scanned train data")
    return list(task.label_names)


def run_scan(cfg: Config, backbone, tokenizer, train_split: data_lib.Split, device: torch.device, run_dir: Path,
             sweep_dir: Path | None = None) -> dict:
    """nu per layer on `train_split` (subsampled as scan.* says), written to <run_dir>/variability.json."""
    path = run_dir / "variability.json"
    labels = train_split.labels
    classes = data_lib.class_ids(labels, cfg.task)
    if cfg.scan.max_examples or cfg.scan.majority_fraction:
        indices = data_lib.stratified_subsample(classes, cfg.scan.max_examples, cfg.scan.seed, cfg.scan.majority_fraction)
        train_split, classes = train_split.subset(indices), classes[indices]
    key = scan_key(cfg, train_split, classes)
    cache_dir = cache_dir_of(cfg, sweep_dir)
    previous = _cached(cfg, key, path, cache_dir)
    if previous is not None:
        return previous
    class_values = np.unique(classes)
    names = class_names(cfg.task, class_values, labels)
    class_index = {value: index for index, value in enumerate(class_values)}
    dense_classes = torch.tensor([class_index[value] for value in classes])
    encoded = data_lib.encode(tokenizer, train_split, cfg.train.max_length)
    batches = data_lib.loader(encoded, cfg.scan.batch_size, tokenizer.pad_token_id, by_length=True)
    scores, info = variability.scan(
        backbone.to(device), batches, lambda batch: dense_classes[batch["index"].cpu()], len(class_values),
        cfg.metric.pooling, cfg.metric.name, device, forward_kwargs(backbone), progress=sys.stderr.isatty(),
        precision=cfg.scan.precision,
    )
    result = {**identity(cfg), **_settings(cfg), "layers": list(range(len(scores))), "scores": scores,
              "num_examples": len(train_split), "class_counts": dict(zip(names, info["class_counts"])),
              "scan_seconds": info["scan_seconds"], "scan_key": key}
    write_json_atomic(path, result)
    if cache_dir is not None:
        write_json_atomic(cache_dir / f"{key}.json", result)
    return result


def print_scan(scan: dict, selection: Selection | None) -> None:
    """The console table: score per layer, the argmin, the head and the tuned layers marked."""
    lines = [f"{scan['metric']} per layer ({scan['pooling']} pooling, {scan['num_examples']} examples, {scan['scan_seconds']:.1f}s):"]
    best = pick_head_layer(scan["scores"], "argmin", 0.0)
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
