"""One Hugging Face Trainer configuration of the time-to-score benchmark (benchmarks/score.py), in
its own process:

    python -m benchmarks.score_trainer SPEC.json RESULT.json

SPEC: {"overrides": [...], "tuning": "full" | "lora", "bf16": bool}. The overrides are the ones the
benchmark gives `python -m hsv_exp` (task, model, task.max_train_examples, seed, train.*), composed
from conf/ into hsv_exp's Config, so the Trainer reads exactly the examples a run does
(`hsv_exp.run.load_data`: the same stratified subsample), tokenized by `hsv_exp.data.encode` with
the same max_length, with the same batch size, lr (Config.body_lr), epochs, warm-up and
decay. The Trainer's own best settings on top: length-grouped batches, fused AdamW, evaluation
after every epoch; dev scores come from hsv_exp.glue_metrics, as a run's do.

RESULT: {"points": [{"epoch", "unix_s", "metrics"}], ...}: `unix_s` is time.time() at the end of
each epoch's evaluation; the benchmark subtracts the moment it started this process.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def run(spec: dict) -> dict:
    import torch
    from transformers import TrainerCallback

    from benchmarks import hf_trainer
    from hsv_exp import data as data_lib
    from hsv_exp import glue_metrics, precision
    from hsv_exp.backbone import load_tokenizer
    from hsv_exp.cli import compose
    from hsv_exp.quiet import quiet_libraries
    from hsv_exp.run import load_data
    from hsv_exp.train import pick_device

    quiet_libraries()
    cfg = compose([*spec["overrides"], f"tuning={spec['tuning']}"])
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    device = pick_device(cfg.train.device)
    data = load_data(cfg)
    task, dev_split = data.task, data.task.eval_splits[0]
    tokenizer = load_tokenizer(cfg.model)
    train = data_lib.encode(tokenizer, data.train, cfg.train.max_length)
    dev = data_lib.encode(tokenizer, data.eval_splits[dev_split], cfg.train.max_length)
    model, _ = hf_trainer.sequence_classifier(cfg.model, task.num_labels, cfg.seed,
                                              cfg.tuning if spec["tuning"] == "lora" else None)

    def compute_metrics(prediction) -> dict[str, float]:
        logits = np.asarray(prediction.predictions)
        predictions = logits.squeeze(-1) if task.is_regression else logits.argmax(-1)
        return glue_metrics.compute(task.metrics, predictions, np.asarray(prediction.label_ids))

    class Clock(TrainerCallback):
        """Each epoch's training seconds, and the time and dev scores at the end of its evaluation."""

        def __init__(self):
            self.points, self.epoch_train_s, self.epoch_started = [], [], 0.0

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.epoch_started = time.perf_counter()

        def on_epoch_end(self, args, state, control, **kwargs):
            self.epoch_train_s.append(time.perf_counter() - self.epoch_started)

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            scores = {f"{dev_split}/{name}": float(metrics[f"eval_{name}"]) for name in task.metrics}
            self.points.append({"epoch": round(state.epoch), "unix_s": time.time(), "metrics": scores})

    clock = Clock()
    output_dir = tempfile.mkdtemp(prefix="hsv_score_hf_")
    args = hf_trainer.arguments(
        cfg.train, cfg.body_lr, cfg.seed, device, output_dir, eval_strategy="epoch",
        per_device_eval_batch_size=cfg.train.eval_batch_size, train_sampling_strategy="group_by_length",
        optim="adamw_torch_fused", dataloader_num_workers=0, bf16=spec["bf16"])
    trainer = hf_trainer.trainer(model, args, hf_trainer.rows(train, task), tokenizer, [clock],
                                 eval_rows=hf_trainer.rows(dev, task), compute_metrics=compute_metrics)
    try:
        trainer.train()
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate wraps it
    return {"points": clock.points, "epoch_train_s": clock.epoch_train_s, "optimizer": type(optimizer).__name__,
            "fused": bool(optimizer.param_groups[0].get("fused")),
            "trainable_params": sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad),
            "num_train_examples": len(train), "num_dev_examples": len(dev),
            "mean_seq_len": float(np.mean([len(feature["input_ids"]) for feature in train.features])),
            "precision": {**({"dtype": "bf16", "reason": "TrainingArguments(bf16=True)"} if spec["bf16"] else
                             {"dtype": "fp32", "reason": "requested"}), "cpu": precision.cpu_info()},
            "device": str(device), "main_metric": f"{dev_split}/{task.main_metric}"}


def main(argv: list[str] | None = None) -> int:
    from hsv_exp.atomic import write_json_atomic

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m benchmarks.score_trainer SPEC.json RESULT.json", file=sys.stderr)
        return 2
    write_json_atomic(Path(argv[1]), run(json.loads(Path(argv[0]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
