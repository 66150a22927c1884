"""Faults of a real hsv_exp training job on the one-node SLURM cluster (scripts/local_slurm.sh), as
the README promises them: a time limit that ends mid-training and a preemption (`scontrol requeue`)
both requeue the job into its run dir, and it finishes with exactly the metrics of an uninterrupted
run; a job killed hard is reported incomplete by the aggregator, and relaunching the sweep resumes it.
sbatch refusing a job prints one line.

Each job is a one-job sweep (`-m launcher=local_slurm`) of the tiny random model on a toy CSV,
trained long enough (thousands of steps, `train.log_every_steps=1` printing each) that the test acts
on a step it has seen printed, not after a guessed sleep. The uninterrupted reference is the same
config run locally, started once in the background for every test of this module.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from slurm_cluster import tail
from test_training import comparable, write_toy_csv

pytestmark = pytest.mark.slurm

# 400 examples, batch 2, 48 epochs: 9,600 optimizer steps (200 an epoch), well over SLURM's ~30 s
# time-limit check period even on an idle machine (1,600 steps took 24.6 s on the shared 2-core CPU;
# with 16 epochs, and once with 24, an idle run finished before the time-limit signal came).
STEPS_PER_EPOCH, EPOCHS = 200, 48
TRAINING = ["model=tiny", "task=custom", "logger=none", "task.label_names=[a,b]", "select=top", "select.k=2",
            f"train.epochs={EPOCHS}", "train.batch_size=2", "train.lr=1e-3", "train.cache_frozen=off", "train.num_threads=1",
            "train.log_every_steps=1", "train.max_length=16"]
ENV = {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults_data")
    write_toy_csv(root / "train.csv", 400, 0)
    write_toy_csv(root / "dev.csv", 40, 1)
    return root


def overrides(data: Path) -> list[str]:
    return [*TRAINING, f"task.files.train={data / 'train.csv'}", f"task.files.dev={data / 'dev.csv'}"]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """-> a function returning the uninterrupted run's metrics (started now, waited for when asked)."""
    run_dir = tmp_path_factory.mktemp("faults_reference") / "run"
    process = subprocess.Popen([sys.executable, "-m", "hsv_exp", *overrides(data), f"hydra.run.dir={run_dir}"], cwd=REPO,
                               env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def metrics() -> dict:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, tail(stderr)
        return json.loads((run_dir / "metrics.json").read_text())

    yield metrics
    process.kill()
    process.wait()


class Sweep:
    """One hsv_exp job as a SLURM sweep, launched in the background; its job's log can be awaited."""

    def __init__(self, env: dict, data: Path, sweep_dir: Path, *extra: str):
        self.env, self.sweep_dir = env, sweep_dir
        self.command = [sys.executable, "-m", "hsv_exp", "-m", "launcher=local_slurm", *overrides(data),
                        f"hydra.sweep.dir={sweep_dir}", *extra]
        self.process = self.launch()

    def launch(self) -> subprocess.Popen:
        return subprocess.Popen(self.command, cwd=REPO, env={**self.env, **ENV}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def wait_for_step(self, step: int, timeout: float = 300) -> str:
        """Waits until the job's log shows optimizer step `step`; -> the SLURM job id."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for log in self.sweep_dir.glob(".submitit/*/*_log.out"):
                if re.search(rf"^step {step} ", log.read_text(errors="replace"), re.M):
                    return log.parent.name
            assert self.process.poll() is None, tail(self.process.stdout.read())
            time.sleep(0.2)
        pytest.fail(f"no 'step {step}' in the job's log after {timeout}s")

    def finish(self, timeout: float = 600) -> tuple[int, str]:
        output, _ = self.process.communicate(timeout=timeout)
        return self.process.returncode, output

    def metrics(self) -> dict:
        [run_dir] = [path.parent for path in self.sweep_dir.glob("*/metrics.json")]
        return json.loads((run_dir / "metrics.json").read_text())


def log_text(sweep: Sweep, kind: str) -> str:
    return "".join(log.read_text(errors="replace") for log in sweep.sweep_dir.glob(f".submitit/*/*_log.{kind}"))


def scontrol(env: dict, *args: str) -> str:
    result = subprocess.run(["scontrol", *args], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def restarts(env: dict, job_id: str) -> int:
    shown = subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, (f"job {job_id} is gone from SLURM ({shown.stderr.strip()}): it ended before it was "
                                   "requeued, i.e. training finished before the fault; make the job longer (EPOCHS)")
    return int(re.search(r"Restarts=(\d+)", shown.stdout).group(1))


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def start_requeued_now(env: dict, job_id: str, *updates: str) -> None:
    """Once the job is back in the queue: start it now (SLURM holds a requeued job ~2 minutes) with `updates`."""
    wait_until(lambda: restarts(env, job_id) >= 1 and "JobState=PENDING" in scontrol(env, "show", "job", job_id),
               120, "the requeued job to be pending")
    scontrol(env, "update", f"JobId={job_id}", "StartTime=now", *updates)


def position(metrics: dict) -> int:
    """The optimizer step a run resumed after (0: it never was)."""
    resumed = metrics["resumed_from"] or {"epoch": 1, "step_in_epoch": 0}
    return (resumed["epoch"] - 1) * STEPS_PER_EPOCH + resumed["step_in_epoch"]


def test_time_limit_mid_training_requeues_and_resumes_to_the_same_metrics(slurm_env, data, reference, tmp_path):
    # The limit is cut to 2 minutes once training runs, so SLURM's warning signal (submitit asks for
    # USR2 120 s before the limit) arrives within its ~30 s check period, mid-training, whatever the
    # machine's speed; submitit checkpoints and requeues (a timeout: max_num_timeout counts it).
    sweep = Sweep(slurm_env, data, tmp_path / "sweep", "hydra.launcher.timeout_min=10", "hydra.launcher.max_num_timeout=2")
    job = sweep.wait_for_step(50)
    scontrol(slurm_env, "update", f"JobId={job}", "TimeLimit=2")
    start_requeued_now(slurm_env, job, "TimeLimit=10")  # the requeued run gets its time back
    code, output = sweep.finish()
    assert code == 0, tail(output)
    assert "this job is timed-out" in log_text(sweep, "err")  # submitit took it for a timeout, not a preemption
    ours = sweep.metrics()
    assert 50 <= position(ours) < STEPS_PER_EPOCH * EPOCHS, "the time limit did not end mid-training"
    assert comparable(ours) == comparable(reference())


def test_preemption_requeue_mid_training_resumes_to_the_same_metrics(slurm_env, data, reference, tmp_path):
    sweep = Sweep(slurm_env, data, tmp_path / "sweep")
    job = sweep.wait_for_step(50)
    scontrol(slurm_env, "requeue", job)  # SIGTERM now, SIGKILL KillWait (5 s) later, then back in the queue
    start_requeued_now(slurm_env, job)
    code, output = sweep.finish()
    assert code == 0, tail(output)
    assert restarts(slurm_env, job) == 1
    ours = sweep.metrics()
    assert position(ours) >= 50
    assert comparable(ours) == comparable(reference())


def test_job_killed_hard_is_incomplete_and_the_relaunched_sweep_resumes_it(slurm_env, data, reference, tmp_path):
    sweep = Sweep(slurm_env, data, tmp_path / "sweep")
    job = sweep.wait_for_step(250)  # past the end of epoch 1, whose checkpoint survives the kill
    # SLURM turns a KILL for a job step into SIGTERM, then SIGKILL KillWait (5 s) later.
    subprocess.run(["scancel", "--signal=KILL", job], env=slurm_env, check=True, timeout=30)
    code, output = sweep.finish()
    assert code != 0 and "has not produced any output" in output, tail(output)

    aggregate = subprocess.run([sys.executable, "-m", "hsv_exp.results", str(sweep.sweep_dir), "--out", str(tmp_path / "results")],
                               cwd=REPO, env={**slurm_env, **ENV}, capture_output=True, text=True, timeout=120)
    assert aggregate.returncode == 0, aggregate.stderr
    assert "(0 complete, 0 failed, 0 scan-only, 1 incomplete)" in aggregate.stdout
    assert "Incomplete runs" in (tmp_path / "results" / "summary.md").read_text()

    sweep.process = sweep.launch()  # the same command again
    code, output = sweep.finish()
    assert code == 0, tail(output)
    ours = sweep.metrics()
    assert position(ours) >= 250
    assert comparable(ours) == comparable(reference())


def test_sbatch_refusing_the_jobs_prints_one_line(slurm_env, data, tmp_path):
    result = subprocess.run([sys.executable, "-m", "hsv_exp", "-m", "launcher=local_slurm", *overrides(data),
                             f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra.launcher.gpus_per_node=1"],
                            cwd=REPO, env={**slurm_env, **ENV}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: sbatch refused the jobs: Invalid generic resource (gres) specification; "
        "on a CPU-only cluster set hydra.launcher.gpus_per_node=null"]
    assert "Traceback" not in result.stdout + result.stderr
