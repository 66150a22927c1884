"""Which float precision a run computes in: `train.precision=auto|fp32|bf16|fp16`.

Autocast (bf16/fp16) covers the forward passes: training, evaluation, the frozen-cache build and,
with `scan.precision=bf16`, the scan. Losses are taken in fp32; master weights and optimizer
state stay fp32 (autocast casts copies of the weights inside each op, never the parameters).

`auto` picks bf16 where the hardware has a fast path and fp32 elsewhere:
- CUDA: bf16 when `torch.cuda.is_bf16_supported()`.
- CPU: bf16 only when the CPU has native bf16 matrix instructions (Intel AMX `amx_bf16` or
  `avx512_bf16`) *and* a short micro-benchmark (one MiniLM-sized transformer block, forward +
  backward, ~1 s) measured bf16 autocast faster than fp32 on this machine. The measurement is
  cached per (CPU model, flags, torch version, threads) in $HSV_EXP_CACHE or ~/.cache/hsv_exp/.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hsv_exp.atomic import write_json_atomic
from hsv_exp.user_cache import cache_root

CHOICES = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# bf16 has to win by this factor in the micro-benchmark: a tie is not worth its rounding.
MIN_SPEEDUP = 1.05
# A first measurement within this distance of MIN_SPEEDUP is repeated with twice the repeats, and the
# second one decides (on a shared machine a few noisy steps can move a 1.2x ratio to 1.0x).
RECHECK_MARGIN = 0.15


@dataclass(frozen=True)
class Precision:
    """The resolved precision of a run: `dtype` is what autocast computes in (float32 = off)."""

    dtype: torch.dtype
    device_type: str  # "cpu" | "cuda"
    requested: str
    reason: str
    cpu: dict  # capability, bf16 flags, micro-benchmark (cpu only)

    @property
    def name(self) -> str:
        return {dtype: name for name, dtype in DTYPES.items()}[self.dtype]

    @property
    def enabled(self) -> bool:
        return self.dtype != torch.float32

    def autocast(self):
        """The context every forward pass runs under (a no-op for fp32)."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def describe(self) -> dict:
        """For the run log, metrics.json and W&B: what was chosen and why."""
        return {"dtype": self.name, "requested": self.requested, "device": self.device_type,
                "reason": self.reason, "cpu": self.cpu}


def machine_label(described: dict) -> str:
    """'bf16, AMD EPYC' from a `Precision.describe()` record (older records without the CPU: the dtype).

    Times measured under different labels are not comparable."""
    return ", ".join(filter(None, [described.get("dtype"), described.get("cpu", {}).get("processor")]))


def cpu_bf16_flags() -> list[str]:
    """The native-bf16 instruction flags /proc/cpuinfo lists (empty off Linux or without them)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [flag for flag in BF16_CPU_FLAGS if flag in flags]


def cpu_info() -> dict:
    return {"capability": torch.backends.cpu.get_cpu_capability(), "bf16_flags": cpu_bf16_flags(),
            "processor": _cpu_model(), "threads": torch.get_num_threads()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def micro_benchmark(repeats: int = 9, batch: int = 16, seq: int = 64, dim: int = 384, warmup: int = 3) -> dict:
    """Median seconds of one MiniLM-sized block (d=384, 12 heads, FFN 1536), forward + backward,
    fp32 vs bf16 autocast, alternated so a shared machine's load hits both alike."""
    generator = torch.Generator().manual_seed(0)
    block = torch.nn.TransformerEncoderLayer(dim, 12, 4 * dim, dropout=0.0, batch_first=True)
    inputs = torch.randn(batch, seq, dim, generator=generator)

    def step(dtype):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            output = block(inputs)
        output.float().square().mean().backward()

    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(warmup):  # allocation, oneDNN's kernel choice: a single warm-up step once gave 1.01x for 1.99x
        for dtype in times:
            step(dtype)
    for _ in range(repeats):
        for dtype in times:
            started = time.perf_counter()
            step(dtype)
            times[dtype].append(time.perf_counter() - started)
    medians = {dtype: sorted(values)[len(values) // 2] for dtype, values in times.items()}
    return {"fp32_s": medians["fp32"], "bf16_s": medians["bf16"], "speedup": medians["fp32"] / medians["bf16"],
            "shape": [batch, seq, dim], "repeats": repeats}


def cache_path() -> Path:
    return cache_root() / "precision_cpu.json"


def cached_micro_benchmark(info: dict) -> dict:
    """micro_benchmark() once per (CPU, flags, torch version, threads); kept in cache_path()."""
    key = hashlib.sha256(json.dumps([info, torch.__version__], sort_keys=True).encode()).hexdigest()[:16]
    path = cache_path()
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        stored = {}
    if key not in stored:
        measured = micro_benchmark()
        if abs(measured["speedup"] - MIN_SPEEDUP) < RECHECK_MARGIN:  # too close to call on one try: measure again
            again = micro_benchmark(repeats=2 * measured["repeats"])
            measured = {**again, "first_speedup": measured["speedup"]}
        stored[key] = {**measured, "torch": torch.__version__}
        try:
            write_json_atomic(path, stored)
        except OSError:
            pass  # a read-only home only costs the ~1 s measurement again next time
    return stored[key]


def resolve(requested: str, device: torch.device | str) -> Precision:
    """The precision a run uses on `device` for `train.precision` (or `scan.precision`) = requested."""
    if requested not in CHOICES:
        raise ValueError(f"precision must be one of {'|'.join(CHOICES)}, got {requested}")
    device_type = torch.device(device).type
    info = cpu_info() if device_type == "cpu" else {}
    if requested != "auto":
        if device_type == "cpu" and requested == "fp16":
            return Precision(torch.float32, device_type, requested, "fp16 autocast is CUDA-only here: fp32", info)
        return Precision(DTYPES[requested], device_type, requested, "requested", info)
    if device_type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, device_type, requested, "CUDA device supports bf16", info)
        return Precision(torch.float32, device_type, requested, "CUDA device without bf16", info)
    if device_type != "cpu":
        return Precision(torch.float32, device_type, requested, f"no autocast policy for {device_type}", info)
    if not info["bf16_flags"]:
        return Precision(torch.float32, device_type, requested, "CPU without native bf16 (amx_bf16/avx512_bf16)", info)
    measured = cached_micro_benchmark(info)
    info = {**info, "micro_benchmark": measured}
    verdict = f"bf16 autocast {measured['speedup']:.2f}x fp32 in the micro-benchmark ({', '.join(info['bf16_flags'])})"
    if measured["speedup"] >= MIN_SPEEDUP:
        return Precision(torch.bfloat16, device_type, requested, verdict, info)
    return Precision(torch.float32, device_type, requested, f"{verdict}, below {MIN_SPEEDUP}x", info)
