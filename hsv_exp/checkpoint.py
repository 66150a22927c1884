"""Atomic training checkpoints and preemption handling.

A checkpoint holds everything that decides the rest of the run: the trainable parameters,
optimizer and scheduler state, RNG states, and the position (epoch, step within the epoch).
SLURM sends SIGTERM on preemption (submitit sends SIGUSR2 before a timeout); the handler only
sets a flag, the training loop saves at the next step boundary and then hands the signal to
whoever handled it before (submitit requeues the job), or exits.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import torch

from hsv_exp.atomic import write_atomic


def atomic_torch_save(obj, path: Path) -> None:
    write_atomic(path, lambda f: torch.save(obj, f), binary=True)


def load(path: Path) -> dict | None:
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Preempted(Exception):
    """Raised after a checkpoint was saved because the job was asked to stop."""


class PreemptionHandler:
    """Catches SIGTERM/SIGUSR2 and defers them to a step boundary."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2)

    def __init__(self):
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> "PreemptionHandler":
        for sig in self.SIGNALS:
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def forward_signal(self) -> None:
        """After checkpointing: let the previous handler (submitit's requeue) act, else exit."""
        signum = self.received
        previous = self.previous.get(signum)
        self.__exit__()
        if callable(previous):
            previous(signum, None)
        print(f"received signal {signum}: checkpoint saved, exiting; re-run the same command to resume", file=sys.stderr)
        raise Preempted(f"signal {signum}")
