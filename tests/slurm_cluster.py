"""The one-node SLURM cluster of scripts/local_slurm.sh for the `slurm` tests (the `slurm_env`
fixture in conftest.py): they need root on Debian; the cluster is installed with apt-get if missing,
started under a tmp dir and always stopped. They skip when that is impossible; HSV_REQUIRE_SLURM=1
turns those skips into failures (for CI)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "local_slurm.sh"


def _unavailable(reason: str) -> None:
    if os.environ.get("HSV_REQUIRE_SLURM") == "1":
        pytest.fail(f"HSV_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def one_node_cluster(state: Path):
    """Environment (SLURM_CONF set) for clients of a one-node cluster running under `state`."""
    if os.geteuid() != 0:
        _unavailable("the SLURM tests need root (they apt-get install and run slurm daemons)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        _unavailable("slurm is not installed and there is no apt-get to install it (not Debian)")
    try:
        install = subprocess.run(["bash", str(SCRIPT), "install"], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        _unavailable("apt-get install of the slurm packages took over 15 minutes")
    if install.returncode != 0:
        _unavailable(f"could not install the slurm packages:\n{tail(install.stderr + install.stdout)}")

    try:
        start = subprocess.run(["bash", str(SCRIPT), "start", str(state)], capture_output=True, text=True,
                               timeout=150)
        logs = "".join(f"\n--- {p.name}\n{tail(p.read_text(errors='replace'), 15)}"
                       for p in sorted((state / "log").glob("*.log")))
        assert start.returncode == 0, f"cluster did not start:\n{start.stderr}{logs}"
        # The test cluster knows no site partition/account/QOS.
        env = {k: v for k, v in os.environ.items() if not k.startswith("HSV_SLURM_")}
        for line in (state / "env.sh").read_text().splitlines():
            if line.startswith("export "):
                key, value = line.removeprefix("export ").split("=", 1)
                env[key] = value
        yield env
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], capture_output=True, text=True, timeout=120)


def sacct_states(env: dict, job_ids: list[str]) -> dict[str, str]:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
                         env=env, capture_output=True, text=True, check=True).stdout
    return dict(line.split("|") for line in out.split())
