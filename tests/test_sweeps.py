"""Every sweep file dry-runs: it composes with the real configs and lists its jobs without
running (or submitting) anything, even when launcher=slurm is asked for."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

SWEEPS = sorted(path.stem for path in (REPO / "sweeps").glob("*.yaml"))


def expected_jobs(name: str, fixed: dict) -> int:
    params = yaml.safe_load((REPO / "sweeps" / f"{name}.yaml").read_text())["hydra"]["sweeper"]["params"]
    count = 1
    for key, values in params.items():
        count *= 1 if key in fixed else len(str(values).split(","))
    return count


def test_there_are_sweeps():
    assert {"select_vs_top", "tuning_methods", "robustness"} <= set(SWEEPS)


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_dry_runs_every_job(name, tmp_path):
    # One task of each sweep keeps this fast (all five GLUE task configs compose in test_config.py).
    fixed = {"task": "rte"}
    done = subprocess.run(
        [sys.executable, "-m", "hsv_exp", "-m", "-cd", "sweeps", "-cn", name, "launcher=slurm", "dry_run=true",
         f"hydra.sweep.dir={tmp_path}", *(f"{key}={value}" for key, value in fixed.items())],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    listed = [line for line in done.stdout.splitlines() if line.startswith("[dry-run] ")]
    assert len(listed) == expected_jobs(name, fixed)
    assert len(set(listed)) == len(listed)  # every job has its own run dir
    assert not list(Path(tmp_path).rglob("metrics.json")) and not list(Path(tmp_path).rglob("variability.json"))
    assert not list(Path(tmp_path).rglob("*.pkl"))  # nothing was handed to submitit
