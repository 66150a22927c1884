"""The training loop: AdamW, linear schedule with warm-up, per-epoch dev evaluation, resumable.

Deterministic on CPU for a given seed: the example order of epoch e is a permutation drawn from
a generator seeded with (seed, e), so a resumed run replays exactly the batches it had left.

With a regularizer (`regularizer=mvcr`, hsv_exp/regularizers/) it is attached after the model is on
its device, replaces `loss.backward()` and steps its own modules every step, travels in the
checkpoint, and is removed when training ends. MVCR's AE-only epochs (`ae_only_epochs`) count inside
train.epochs, as the authors': only the AEs step, the task scheduler's steps and warm-up ratio
cover the remaining (joint) epochs, and the AE-only epochs are not evaluated (the model does not
change), so they are never the best epoch.
"""

from __future__ import annotations

import logging
import math
import shutil
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from hsv_exp import checkpoint as ckpt
from hsv_exp import glue_metrics
from hsv_exp import regularizers
from hsv_exp.frozen_cache import build_cache, has_frozen_prefix, split_forward, window_logits
from hsv_exp.config import TaskConfig, TrainConfig
from hsv_exp.data import Collator, Encoded, length_order
from hsv_exp.precision import Precision, resolve
from hsv_exp.regularizers.mvcr import extra_train_flops_per_token
from hsv_exp.strategy_config import RegularizerConfig, ae_only_epochs
from hsv_exp.tuning.state import trainable_state

logger = logging.getLogger("hsv_exp")


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one dict per epoch
    best: dict = field(default_factory=dict)
    last: dict = field(default_factory=dict)
    train_time_s: float = 0.0  # the optimizer steps (and the frozen cache's build), summed over resumes
    wall_s: float = 0.0  # wall clock of train(), per-epoch evaluation included, summed over resumes
    epoch_times_s: list[float] = field(default_factory=list)
    peak_memory_mb: float = 0.0
    cache: dict | None = None  # frozen-prefix cache: mode, size, build time
    precision: dict = field(default_factory=dict)  # Precision.describe() of the run
    resumed_from: dict | None = None
    regularizer: dict | None = None  # what the regularizer added: its layers and extra FLOPs per token


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB; process peak RSS


def epoch_line(record: dict) -> str:
    """One epoch's record as the run log shows it: train loss, every eval metric, seconds."""
    metrics = [f"{key} {value:.4f}" for key, value in record.items() if "/" in key and not key.startswith(("train/", "time/"))]
    phase = [f"({record['phase']})"] if "phase" in record else []
    return ", ".join([f"train/loss {record['train/loss']:.4f}", *metrics, f"{record['epoch_time_s']:.0f} s"] + phase)


def epoch_order(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, group_by_length: bool) -> np.ndarray:
    """The example order of one epoch, a pure function of (seed, epoch) so a resumed run replays it.

    group_by_length: within windows of 50 batches of the random permutation, examples are sorted
    by length so a batch pads less (the Hugging Face Trainer's group_by_length idea); the batches
    are then shuffled, so batch composition stays random but padding drops (RTE: ~2x less).
    """
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(lengths), generator=generator).numpy()
    if not group_by_length:
        return order
    window = 50 * batch_size
    grouped = np.concatenate([chunk[np.argsort(-lengths[chunk], kind="stable")] for chunk in np.split(order, range(window, len(order), window))])
    batches = np.split(grouped, range(batch_size, len(grouped), batch_size))
    full = len(order) // batch_size  # a short last batch stays last: the order is cut every batch_size
    permutation = torch.randperm(full, generator=generator).numpy()
    return np.concatenate([batches[index] for index in permutation] + batches[full:])


def _batches(encoded: Encoded, batch_size: int, collate: Collator, order: np.ndarray, start: int = 0):
    for begin in range(start * batch_size, len(order), batch_size):
        indices = order[begin:begin + batch_size]
        yield collate([(encoded.features[i], encoded.labels[i], i) for i in indices])


def _inputs(batch: dict, device: torch.device) -> dict:
    keys = ("input_ids", "attention_mask", "special_tokens_mask", "token_type_ids")
    return {key: batch[key].to(device) for key in keys if key in batch}


def _loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    if regression:
        return torch.nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
    return torch.nn.functional.cross_entropy(logits.float(), labels)


@torch.no_grad()
def evaluate(model, encoded: Encoded, task: TaskConfig, cfg: TrainConfig, collate: Collator, device: torch.device,
             prefix: str, forward=None, precision: Precision | None = None) -> dict[str, float]:
    """Metrics of `model` on `encoded`; `forward(batch)` replaces the plain forward (e.g. over a cache).
    `precision`: None = resolve(cfg.precision, device)."""
    model.eval()
    precision = precision or resolve(cfg.precision, device)
    forward = forward or (lambda batch: model(**_inputs(batch, device)))
    outputs = []
    # Batches of similar length (little padding); the logits go back to example order below.
    order = length_order(encoded)
    for batch in _batches(encoded, cfg.eval_batch_size, collate, order):
        with precision.autocast():
            outputs.append(forward(batch).float().cpu())
    sorted_logits = torch.cat(outputs)
    logits = torch.empty_like(sorted_logits)
    logits[torch.from_numpy(order)] = sorted_logits
    predictions = logits.squeeze(-1).numpy() if task.is_regression else logits.argmax(-1).numpy()
    scores = glue_metrics.compute(task.metrics, predictions, encoded.labels)
    return {f"{prefix}/{name}": value for name, value in scores.items()}


def _optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay, head = [], [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if name.startswith("head."):
            head.append(parameter)
        elif parameter.ndim < 2:  # biases and LayerNorm weights take no weight decay
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
        {"params": head, "weight_decay": cfg.weight_decay, "lr": cfg.head_lr or cfg.lr},
    ]
    # fused: one kernel over all parameters; 5.0x faster per step than the default for-loop on this
    # CPU for MiniLM's 22.7M parameters, and foreach no faster (results/bench/precision_cpu.md).
    return torch.optim.AdamW([group for group in groups if group["params"]], lr=cfg.lr, fused=True)


def _cached_forward(model, data: Encoded, cfg: TrainConfig, collate: Collator, device: torch.device,
                    directory: Path | None, precision: Precision):
    """A forward for batches of `data`: the full model, split at the window, or window-only over a
    cache of the frozen prefix's output (built here, in one pass). Returns (forward, cache or None, build seconds)."""
    if not has_frozen_prefix(model):
        return (lambda batch: model(**_inputs(batch, device))), None, 0.0
    if cfg.cache_frozen == "off":
        return (lambda batch: split_forward(model, _inputs(batch, device))), None, 0.0
    started = time.perf_counter()
    lengths = [len(feature["input_ids"]) for feature in data.features]
    # The cache stores examples unpadded: building it in length order only saves padding.
    with precision.autocast():
        cache = build_cache(model, _batches(data, cfg.eval_batch_size, collate, length_order(data)), lengths,
                            cfg.cache_frozen, cfg.cache_memory_budget_mb, directory, device)

    def forward(batch):
        inputs = _inputs(batch, device)
        states = cache.batch(batch["index"], batch["input_ids"].shape[1], device)
        return window_logits(model, inputs, states)

    return forward, cache, time.perf_counter() - started


def attach_regularizer(model, cfg: RegularizerConfig | None, train_cfg: TrainConfig, seed: int):
    """The regularizer's handle on `model` (None for none), its AE-only epochs, and what it adds to the
    compute record. Its modules' init depends on `seed` only and leaves the global RNG as it was."""
    if cfg is None or cfg.name == "none":
        return None, 0, None
    warmup = ae_only_epochs(cfg, train_cfg.epochs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        handle = regularizers.attach(model, cfg, train_cfg.lr)
    hidden = model.backbone.config.hidden_size
    info = {"name": cfg.name, "layers": list(handle.layers), "warmup_epochs": warmup,
            "params": sum(parameter.numel() for parameter in handle.parameters()),
            "extra_train_flops_per_token": extra_train_flops_per_token(hidden, list(cfg.dims), len(handle.layers)),
            "extra_ae_only_flops_per_token": extra_train_flops_per_token(hidden, list(cfg.dims), len(handle.layers), ae_only=True)}
    return handle, warmup, info


def _step(model, batch, forward, optimizer, scheduler, cfg: TrainConfig, task: TaskConfig, device, precision: Precision,
          regularizer=None, ae_only: bool = False) -> tuple[float, dict[str, float]]:
    """One training step -> (task loss, the regularizer's losses). With a regularizer, its backward
    replaces loss.backward() and it steps after the task optimizer (`mvcr.reference_step`);
    ae_only (MVCR's warm-up): the task optimizer and scheduler do not step."""
    with precision.autocast():
        logits = forward(batch)
    loss = _loss(logits, batch["labels"].to(device), task.is_regression)
    optimizer.zero_grad(set_to_none=True)
    extra: dict[str, float] = {}
    if regularizer is None:
        loss.backward()
    else:  # the AEs step at lr_multiplier x the task lr of this step (the unscheduled lr while AE-only)
        task_lr = cfg.lr if ae_only else cfg.lr * scheduler.get_last_lr()[0] / scheduler.base_lrs[0]
        extra = regularizer.backward(None if ae_only else loss)
    if not ae_only:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
    if regularizer is not None:
        regularizer.step(task_lr)
    return loss.item(), extra


def _best(history: list[dict], main_key: str) -> dict:
    """The best evaluated epoch (AE-only epochs are not evaluated)."""
    return max((record for record in history if main_key in record), key=lambda record: record[main_key])


def train(model, train_data: Encoded, eval_data: dict[str, Encoded], task: TaskConfig, cfg: TrainConfig, seed: int,
          pad_token_id: int, run_dir: Path | None = None, log=lambda metrics: None, progress: bool = True,
          precision: Precision | None = None, regularizer: RegularizerConfig | None = None,
          started: float | None = None) -> TrainResult:
    """Train `model` in place; `eval_data` maps split name (dev, dev_matched, ...) to data.

    `started`: the time.perf_counter() at which the run began (hsv_exp.run passes its own start);
    each epoch's record then holds `time/elapsed_s`, the seconds from it to the end of that epoch's
    evaluation, so model loading, tokenization, the scan and the cache builds count.

    `precision` (None = resolve(cfg.precision, device)) sets the autocast of every forward pass;
    the loss is taken in fp32 and the weights and AdamW state stay fp32. `regularizer`: attached
    for training only (see the module docstring); the model comes back without it.

    With `run_dir`, a checkpoint is written to run_dir/checkpoint/last.pt at every epoch end and on
    SIGTERM/SIGUSR2, and an existing one is resumed. Longer than 60 lines: set-up, resume, the
    epoch loop and clean-up share the loop's state; the step and the regularizer are split out.
    """
    segment_started = time.perf_counter()  # this process's share of wall_s
    device = pick_device(cfg.device)
    model.to(device)
    precision = precision or resolve(cfg.precision, device)
    mvcr, ae_epochs, regularizer_info = attach_regularizer(model, regularizer, cfg, seed)
    collate = Collator(pad_token_id)
    steps_per_epoch = math.ceil(len(train_data) / cfg.batch_size)
    total_steps = steps_per_epoch * (cfg.epochs - ae_epochs)  # the task optimizer's steps
    optimizer = _optimizer(model, cfg)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    main_key = f"{next(iter(eval_data))}/{task.main_metric}"
    result = TrainResult(precision=precision.describe(), regularizer=regularizer_info)
    torch.manual_seed(seed)
    start_epoch, start_step, elapsed, wall_before, losses, extra_losses = 1, 0, 0.0, 0.0, [], {}

    path = run_dir / "checkpoint" / "last.pt" if run_dir is not None else None
    state = ckpt.load(path) if path is not None else None
    if state is not None:
        model.load_state_dict(state["trainable"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        start_epoch, start_step, elapsed = state["epoch"], state["step_in_epoch"], state["train_time_s"]
        wall_before = state.get("wall_s", elapsed)  # checkpoints before wall_s was kept: a lower bound
        losses = state["epoch_losses"]
        result.history, result.epoch_times_s = state["history"], state["epoch_times_s"]
        result.resumed_from = {"epoch": start_epoch, "step_in_epoch": start_step}
        if mvcr is not None:
            mvcr.load_state_dict(state["regularizer"]["state"])
            extra_losses = state["regularizer"]["epoch_losses"]

    def wall() -> float:
        return wall_before + time.perf_counter() - segment_started

    def save(epoch: int, step_in_epoch: int) -> None:
        if path is not None:
            ckpt.atomic_torch_save({
                "trainable": trainable_state(model), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": ckpt.rng_state(), "epoch": epoch, "step_in_epoch": step_in_epoch,
                "train_time_s": elapsed, "wall_s": wall(),
                "history": result.history, "epoch_times_s": result.epoch_times_s, "epoch_losses": losses,
                **({"regularizer": {"state": mvcr.state_dict(), "epoch_losses": extra_losses}} if mvcr is not None else {}),
            }, path)

    global_step = (start_epoch - 1) * steps_per_epoch + start_step
    lengths = np.array([len(feature["input_ids"]) for feature in train_data.features])
    forward, cache, cache_seconds = _cached_forward(model, train_data, cfg, collate, device, run_dir, precision)
    if cache is not None:
        result.cache = {"mode": cache.mode, "size_mb": cache.size_mb, "build_s": cache_seconds,
                        "path": str(cache.path) if cache.path else None}
    # The dev sets go through the same frozen prefix every epoch: cached too, built at the first evaluation.
    eval_forwards: dict[str, tuple] = {}
    try:
        with ckpt.PreemptionHandler() as preemption:
            for epoch in range(start_epoch, cfg.epochs + 1):
                model.train()
                ae_only = epoch <= ae_epochs
                order = epoch_order(lengths, cfg.batch_size, seed, epoch, cfg.group_by_length)
                epoch_started = time.perf_counter() - cache_seconds  # the cache is built once, billed to the first epoch run
                cache_seconds = 0.0
                first_step = start_step if epoch == start_epoch else 0
                batches = _batches(train_data, cfg.batch_size, collate, order, first_step)
                bar = tqdm(batches, total=steps_per_epoch - first_step, desc=f"epoch {epoch}", disable=not progress, leave=False)
                for step_in_epoch, batch in enumerate(bar, start=first_step + 1):
                    loss, extra = _step(model, batch, forward, optimizer, scheduler, cfg, task, device, precision, mvcr, ae_only)
                    losses.append(loss)
                    for name, value in extra.items():
                        extra_losses.setdefault(name, []).append(value)
                    global_step += 1
                    if cfg.log_every_steps and global_step % cfg.log_every_steps == 0:
                        log({"train/step_loss": losses[-1], "train/global_step": global_step})
                        print(f"step {global_step} epoch {epoch} loss {losses[-1]:.4f}", flush=True)
                    if preemption.received is not None:
                        elapsed += time.perf_counter() - epoch_started
                        save(epoch, step_in_epoch)
                        preemption.forward_signal()
                epoch_time = time.perf_counter() - epoch_started
                elapsed += epoch_time
                record = {"epoch": epoch, **({"phase": "ae_only"} if ae_only else {}),
                          "train/loss": float(np.mean(losses)) if losses else float("nan"),
                          "train/lr": scheduler.get_last_lr()[0], "epoch_time_s": epoch_time,
                          **{name: float(np.mean(values)) for name, values in extra_losses.items()}}
                for split, data in ({} if ae_only else eval_data).items():  # AE-only: the model is unchanged
                    if split not in eval_forwards:
                        directory = run_dir / "eval_cache" / split if run_dir is not None else None
                        eval_forwards[split] = _cached_forward(model, data, cfg, collate, device, directory, precision)
                    record.update(evaluate(model, data, task, cfg, collate, device, split, eval_forwards[split][0], precision))
                if started is not None:
                    record["time/elapsed_s"] = time.perf_counter() - started
                result.history.append(record)
                result.epoch_times_s.append(epoch_time)
                log(record)
                logger.info("epoch %d: %s", epoch, epoch_line(record))
                losses, extra_losses = [], {}
                save(epoch + 1, 0)
            if preemption.received is not None:  # asked to stop after the last step: during the last evaluation
                preemption.forward_signal()  # the checkpoint is saved; the rerun finds training done and writes the results
    finally:
        if mvcr is not None:
            mvcr.remove()  # plugged out: what follows (saving, evaluating) sees the plain model
    for each_cache in [cache, *(entry[1] for entry in eval_forwards.values())]:
        if each_cache is not None:
            each_cache.close()
    if run_dir is not None:
        shutil.rmtree(run_dir / "eval_cache", ignore_errors=True)
    result.last = result.history[-1]
    result.best = _best(result.history, main_key)
    result.train_time_s = elapsed
    result.wall_s = wall()
    result.peak_memory_mb = peak_memory_mb(device)
    return result
