"""The head alone, isolated (issue 13): an nn.Linear trained as hsv_exp.train trains the head (AdamW,
weight decay 0.01, 6% linear warm-up then linear decay, grad-norm clip 1.0, dropout 0.1, the task's
batch size) on the frozen top-layer pooled states of MiniLM, under head learning rates, feature
standardisation and a zero init, against the closed-form probe on the same states.

    python scripts/head_only.py --tasks sst2 mrpc --train-examples 500 --epochs 1 2

Writes results/head_recipe/head_only.csv (atomically). Seconds per task on one CPU thread.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from hsv_exp import data as data_lib
from hsv_exp import glue_metrics
from hsv_exp.atomic import write_atomic
from hsv_exp.backbone import load_backbone, load_tokenizer
from hsv_exp.probe import layer_states, probe_score, standardiser
from hsv_exp.probe_report import compose
from hsv_exp.run import load_data

OUT = Path(__file__).resolve().parent.parent / "results" / "head_recipe" / "head_only.csv"


def train_head(train_x, train_y, dev_x, task, lr, epochs, batch_size, zero_init, dropout=0.1, seed=0):
    torch.manual_seed(seed)
    head = nn.Linear(train_x.shape[1], task.num_labels)
    if zero_init:
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    drop = nn.Dropout(dropout)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
    steps = math.ceil(len(train_x) / batch_size) * epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.06 * steps), steps)
    x, y = torch.as_tensor(train_x, dtype=torch.float32), torch.as_tensor(train_y)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        total = 0.0
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            logits = head(drop(x[batch]))
            if task.is_regression:
                loss = nn.functional.mse_loss(logits.squeeze(-1), y[batch].float())
            else:
                loss = nn.functional.cross_entropy(logits, y[batch].long())
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(batch)
        losses.append(total / len(x))
    with torch.no_grad():
        out = head(torch.as_tensor(dev_x, dtype=torch.float32))
    predictions = out.squeeze(-1).numpy() if task.is_regression else out.argmax(-1).numpy()
    return predictions, losses


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", nargs="+", default=["sst2", "mrpc"])
    parser.add_argument("--train-examples", type=int, default=500)
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--lrs", type=float, nargs="+", default=[5e-5, 5e-4, 5e-3, 2e-2, 5e-2, 1e-1])
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, backbone = [], None
    for name in args.tasks:
        cfg = compose("minilm", name, args.train_examples, 0)
        if backbone is None:
            backbone, tokenizer = load_backbone(cfg.model), load_tokenizer(cfg.model)
        _, train_split, evals = load_data(cfg)
        dev = next(iter(evals.values()))
        top = {key: layer_states(backbone, data_lib.encode(tokenizer, split, cfg.train.max_length), tokenizer.pad_token_id,
                                 cfg.metric.pooling)[-1] for key, split in (("train", train_split), ("dev", dev))}
        metric = cfg.task.main_metric
        probe = probe_score(top["train"], train_split.labels, top["dev"], dev.labels, cfg.task)[metric]
        mean, scale = standardiser(top["train"])
        norm = float(np.linalg.norm(top["train"], axis=1).mean())
        base = {"task": name, "metric": metric, "train_examples": len(train_split), "batch_size": cfg.train.batch_size,
                "probe": round(probe, 4), "mean_state_norm": round(norm, 3)}
        for epochs in args.epochs:
            for standardise in (False, True):
                features = {key: (value - mean) / scale if standardise else value for key, value in top.items()}
                for zero_init in (False, True):
                    for lr in args.lrs:
                        predictions, losses = train_head(features["train"], train_split.labels, features["dev"], cfg.task,
                                                         lr, epochs, cfg.train.batch_size, zero_init)
                        score = glue_metrics.compute([metric], predictions, dev.labels)[metric]
                        rows.append({**base, "epochs": epochs, "standardised": standardise, "zero_init": zero_init,
                                     "head_lr": lr, "score": round(score, 4), "train_loss": " ".join(f"{l:.4f}" for l in losses)})
                        print(rows[-1], flush=True)

    def write(f):
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_atomic(OUT, write)


if __name__ == "__main__":
    main()
