"""Hydra multirun sweeps through a real one-node SLURM cluster (scripts/local_slurm.sh).

The cluster tests (marker `slurm`) need root on Debian: the `slurm_env` fixture (conftest.py,
tests/slurm_cluster.py) installs slurm/munge/mariadb with apt-get if missing, starts the daemons
under a tmp dir and always stops them. They skip when that is impossible; HSV_REQUIRE_SLURM=1 turns
those skips into failures (for CI). Faults of real hsv_exp training jobs: tests/test_slurm_faults.py.
The sweeps use a minimal Hydra app written into tmp dirs that takes its launcher configs from the
repo's conf/launcher/ through hydra.searchpath, so they test the launcher configs and the cluster,
not the pipeline. The composition tests at the top need no cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from hsv_exp.sbatch_errors import refusal_line
from slurm_cluster import sacct_states, tail as _tail

REPO = Path(__file__).resolve().parents[1]
SWEEP_TIMEOUT_S = 120  # a sweep of a few trivial jobs takes seconds; longer means it hangs

APP = '''
import os, signal
from pathlib import Path
import hydra
from hydra.core.hydra_config import HydraConfig

@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg):
    if cfg.x == cfg.crash_at:
        raise RuntimeError(f"intentional crash x={cfg.x}")
    if cfg.x == cfg.kill_at:  # dies before submitit can write a result: only sacct can tell
        os.kill(os.getpid(), signal.SIGKILL)
    out = Path(HydraConfig.get().runtime.output_dir)
    (out / "result.txt").write_text(f"{cfg.x} {os.environ.get('SLURM_JOB_ID')}")
    return cfg.x
if __name__ == "__main__":
    main()
'''

# Like conf/config.yaml: `launcher: local` in the defaults list, no hydra/launcher override.
CONFIG = '''
defaults:
  - _self_
  - launcher: local
x: 0
crash_at: null
kill_at: null
hydra:
  searchpath: ["file://{search_dir}"]
  job:
    name: toy
'''


def write_app(root: Path) -> Path:
    """A minimal Hydra app under `root` whose `launcher` group is the repo's conf/launcher/.

    The search path holds only a link to conf/launcher, so a developer's git-ignored
    conf/local/ overrides do not leak into the tests.
    """
    search_dir = root / "repo_conf"
    search_dir.mkdir(parents=True, exist_ok=True)
    (search_dir / "launcher").symlink_to(REPO / "conf" / "launcher", target_is_directory=True)
    (root / "conf").mkdir(exist_ok=True)
    (root / "conf" / "config.yaml").write_text(CONFIG.format(search_dir=search_dir))
    (root / "app.py").write_text(textwrap.dedent(APP))
    return root / "app.py"


# --- composition: no cluster needed -------------------------------------------------------------


@pytest.fixture
def compose_app(tmp_path):
    write_app(tmp_path)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(tmp_path / "conf"), version_base="1.3"):
        yield lambda *overrides: compose("config", overrides=list(overrides), return_hydra_config=True)
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("launcher, target", [
    ("local", "BasicLauncher"),
    ("submitit_local", "submitit_launcher.LocalLauncher"),
    ("slurm", "hydra_plugins.hsv_exp_launcher.SlurmLauncher"),
    ("local_slurm", "hydra_plugins.hsv_exp_launcher.SlurmLauncher"),
])
def test_launcher_config_selects_hydra_launcher(compose_app, launcher, target):
    cfg = compose_app(f"launcher={launcher}")
    assert cfg.hydra.launcher._target_.endswith(target)


def test_slurm_launcher_takes_cluster_identity_from_env(compose_app, monkeypatch):
    monkeypatch.delenv("HSV_SLURM_ACCOUNT", raising=False)
    monkeypatch.setenv("HSV_SLURM_PARTITION", "gpu")
    cfg = compose_app("launcher=slurm", "hydra.launcher.mem_gb=64")
    assert cfg.hydra.launcher.partition == "gpu"
    assert cfg.hydra.launcher.account is None
    assert cfg.hydra.launcher.mem_gb == 64
    # the test-cluster preset never takes the site's partition
    local = compose_app("launcher=local_slurm").hydra.launcher
    assert (local.partition, local.gpus_per_node, local.cpus_per_task) == (None, None, 1)


@pytest.mark.parametrize("stderr, line", [
    ("sbatch: error: Invalid generic resource (gres) specification",
     "Invalid generic resource (gres) specification; on a CPU-only cluster set hydra.launcher.gpus_per_node=null"),
    ("sbatch: error: invalid partition specified: nope\nsbatch: error: Batch job submission failed: Invalid partition name specified",
     "invalid partition specified: nope; Batch job submission failed: Invalid partition name specified; "
     "set hydra.launcher.partition=... (or HSV_SLURM_PARTITION)"),
    ("sbatch: error: Memory specification can not be satisfied", "Memory specification can not be satisfied; lower hydra.launcher.mem_gb"),
    ("sbatch: error: Batch job submission failed: Requested node configuration is not available",
     "Batch job submission failed: Requested node configuration is not available; "
     "ask for less per job: hydra.launcher.cpus_per_task, mem_gb or gpus_per_node=null"),
    ("sbatch: error: Something new", "Something new; check the hydra.launcher.* settings (conf/launcher/slurm.yaml, conf/local/)"),
], ids=["gres", "partition", "memory", "node", "other"])
def test_sbatch_refusal_is_one_line_with_the_key_to_change(stderr, line):
    # The stderr of sbatch as this one-node cluster writes it (sbatch --gpus-per-node=1, --partition=nope,
    # --mem=900G, --cpus-per-task=64); tests/test_slurm_faults.py checks the first through the real CLI.
    assert refusal_line(stderr) == f"error: sbatch refused the jobs: {line}"


# --- the cluster ------------------------------------------------------------------------------------


@pytest.fixture
def sweep(slurm_env, tmp_path):
    """Runs `app.py -m OVERRIDES` in a fresh tmp dir; returns (completed process, sweep dir)."""
    app = write_app(tmp_path / "app")

    def run(*overrides: str, launcher: str = "local_slurm", extra_env: dict | None = None):
        sweep_dir = tmp_path / "multirun"
        try:
            proc = subprocess.run(
                [sys.executable, str(app), "-m", f"launcher={launcher}", f"hydra.sweep.dir={sweep_dir}", *overrides],
                cwd=tmp_path, env={**slurm_env, **(extra_env or {})}, capture_output=True, text=True,
                timeout=SWEEP_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"sweep hung for {SWEEP_TIMEOUT_S}s:\n{_tail(str(exc.stderr or ''))}")
        return proc, sweep_dir

    return run


@pytest.mark.slurm
def test_sbatch_job_is_accounted(slurm_env, tmp_path):
    job = subprocess.run(["sbatch", "--parsable", "-o", str(tmp_path / "%j.out"), "--wrap", "hostname"],
                         cwd=tmp_path, env=slurm_env, capture_output=True, text=True, timeout=30)
    assert job.returncode == 0, job.stderr
    job_id = job.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 60
    while (state := sacct_states(slurm_env, [job_id]).get(job_id)) in (None, "PENDING", "RUNNING"):
        assert time.monotonic() < deadline, f"job {job_id} still {state} after 60s"
        time.sleep(0.5)
    assert state == "COMPLETED"
    assert (tmp_path / f"{job_id}.out").read_text().strip()


@pytest.mark.slurm
def test_an_ended_state_read_from_sacct_waits_while_slurmctld_still_queues_the_job(slurm_env, tmp_path, monkeypatch):
    """The requeue race of hsv_exp/slurm_watch.py: sacct can call a job FAILED for a moment while
    submitit requeues it. That reading is given to the watcher here (it cannot be timed on a real
    cluster); slurmctld's view is the real cluster's, a held job pending in the queue: the watcher
    waits, submitit's own would give up. Once the job has really ended, both count it ended."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    from hsv_exp.slurm_watch import RequeueAwareWatcher, still_queued

    for key, value in slurm_env.items():
        monkeypatch.setenv(key, value)
    held = subprocess.run(["sbatch", "--parsable", "--hold", "-o", str(tmp_path / "%j.out"), "--wrap", "true"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert held.returncode == 0, held.stderr
    job_id = held.stdout.strip().split(";")[0]
    stale = {"State": "FAILED"}

    def done(watcher) -> bool:
        watcher.register_job(job_id)
        watcher._info_dict[job_id] = stale  # the sacct reading of the race
        return watcher.is_done(job_id, mode="cache")

    assert still_queued(job_id)
    assert done(SlurmInfoWatcher()) and not done(RequeueAwareWatcher())
    subprocess.run(["scancel", job_id], check=True, timeout=30)
    deadline = time.monotonic() + 60
    while still_queued(job_id):
        assert time.monotonic() < deadline, f"job {job_id} still queued 60 s after scancel"
        time.sleep(0.5)
    assert done(RequeueAwareWatcher())
    assert not still_queued("999999999")  # a job slurmctld does not know


@pytest.mark.slurm
def test_sweep_runs_every_job_on_slurm(sweep):
    # The production preset with the partition from the environment, sized down to this cluster.
    proc, sweep_dir = sweep("x=1,2,3", "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1",
                            "hydra.launcher.mem_gb=1", launcher="slurm", extra_env={"HSV_SLURM_PARTITION": "debug"})
    assert proc.returncode == 0, _tail(proc.stderr)
    results = sorted(p.read_text().split() for p in sweep_dir.glob("*/result.txt"))
    assert [x for x, _ in results] == ["1", "2", "3"]
    assert all(job_id != "None" for _, job_id in results), "jobs did not run under SLURM"


@pytest.mark.slurm
def test_crashing_job_is_reported_and_the_others_finish(sweep):
    proc, sweep_dir = sweep("x=1,2,3", "crash_at=2")
    assert proc.returncode != 0
    assert "intentional crash x=2" in proc.stderr
    assert sorted(p.read_text().split()[0] for p in sweep_dir.glob("*/result.txt")) == ["1", "3"]


@pytest.mark.slurm
def test_job_killed_before_its_result_is_reported_not_waited_on(sweep):
    # Nothing is written for the killed job: submitit learns it died from sacct (slurmdbd).
    proc, sweep_dir = sweep("x=1,2", "kill_at=2")
    assert proc.returncode != 0
    assert "has not produced any output" in proc.stderr, _tail(proc.stderr)
    assert [p.read_text().split()[0] for p in sweep_dir.glob("*/result.txt")] == ["1"]




@pytest.mark.slurm
def test_hsv_exp_sweep_through_slurm(slurm_env, tmp_path):
    """The real pipeline as a SLURM job array: 2 good jobs, 2 that fail on a bad window size.
    The failures do not stop the sweep, and the aggregator collects all four."""
    rng = __import__("random").Random(0)
    for name, size in (("train", 80), ("dev", 30)):
        rows = ["text,label"]
        for _ in range(size):
            label = rng.choice("ab")
            rows.append(" ".join(rng.choices(("good great fine" if label == "a" else "bad awful poor").split(), k=5)) + f",{label}")
        (tmp_path / f"{name}.csv").write_text("\n".join(rows) + "\n")
    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, "-m", "hsv_exp", "-m", "launcher=local_slurm", "model=tiny", "task=custom", "logger=none",
               f"task.files.train={tmp_path / 'train.csv'}", f"task.files.dev={tmp_path / 'dev.csv'}", "task.label_names=[a,b]",
               "train.epochs=1", "select=top", "select.k=1,9", "seed=0,1", f"hydra.sweep.dir={sweep_dir}"]
    env = {**slurm_env, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, _tail(proc.stdout + proc.stderr)
    runs = {path.name: path for path in sweep_dir.iterdir() if (path / ".hydra").is_dir()}
    assert len(runs) == 4, sorted(runs)
    for name, path in runs.items():
        if "select.k=1" in name:
            metrics = json.loads((path / "metrics.json").read_text())
            assert metrics["status"] == "complete" and metrics["head_layer"] == 4
            assert not (path / "failed.json").exists()
        else:
            failure = json.loads((path / "failed.json").read_text())
            assert "select.k=9 is larger than the head layer" in failure["error"]
            assert not (path / "metrics.json").exists()
    out = tmp_path / "results"
    aggregate = subprocess.run([sys.executable, "-m", "hsv_exp.results", str(sweep_dir), "--out", str(out)],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert aggregate.returncode == 0, aggregate.stderr
    summary = (out / "summary.md").read_text()
    assert summary.count("select.k=9 is larger than the head layer") == 2
