"""Every sweep file dry-runs: it composes with the real configs and lists its jobs without
running (or submitting) anything, even when launcher=slurm is asked for."""

import json
import os
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
    jobs = expected_jobs(name, fixed)
    assert len(listed) == jobs
    run_dirs = [line.removeprefix("[dry-run] ").rsplit("  ", 1)[0] for line in listed]
    assert len(set(run_dirs)) == len(run_dirs)  # every job has its own run dir
    assert all(line.endswith("  new") for line in listed)
    assert done.stdout.splitlines()[-1] == (f"dry run: {jobs} jobs: 0 complete, 0 resumable, 0 would reuse, {jobs} new, "
                                            "0 conflict, 0 invalid")
    assert not list(Path(tmp_path).rglob("*"))  # nothing written: no job dirs, .hydra, multirun.yaml or submitit files


def test_dry_run_lists_the_sweep_dir_that_study_names():
    """`study=` on the command line names the sweep dir (multirun/<study>) in the dry run as in the
    real sweep, also when a group override (model=) is given: its jobs' states are read from there."""
    done = subprocess.run([sys.executable, "-m", "hsv_exp", "-m", "-cd", "sweeps", "-cn", "robustness", "task=rte", "model=tiny",
                           "scan.max_examples=100", "study=elsewhere", "dry_run=true"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    listed = [line.removeprefix("[dry-run] ") for line in done.stdout.splitlines() if line.startswith("[dry-run] ")]
    assert len(listed) == 6 and all(line.startswith("multirun/elsewhere/model=tiny,") for line in listed), listed


def _snapshot(root: Path) -> dict:
    return {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in sorted(root.rglob("*")) if path.is_file()}


def _hsv(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "hsv_exp", *args], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=None if env is None else {**os.environ, **env})
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_dry_run_reports_each_job_state_and_writes_nothing(tmp_path):
    """A sweep dir with one complete run, one with a checkpoint and one new: each state is reported,
    and no file's bytes or mtime change."""
    import torch

    from hsv_exp.run_dir import config_fingerprint

    sweep = tmp_path / "sweep"
    common = ["model=tiny", "task=custom", "task.files.train=/nowhere/train.csv", "task.label_names=[a,b]", "select=top",
              "select.k=1", f"hydra.sweep.dir={sweep}"]

    def states() -> tuple[dict, str]:
        lines = _hsv("-m", *common, "seed=0,1,2", "dry_run=true").stdout.splitlines()
        jobs = [line.removeprefix("[dry-run] ").split("  ", 1) for line in lines if line.startswith("[dry-run] ")]
        return {Path(run_dir): state for run_dir, state in jobs}, lines[-1]

    found, _ = states()
    seed_of = {run_dir: next(part for part in run_dir.name.split(",") if part.startswith("seed=")) for run_dir in found}
    dirs = {seed: run_dir for run_dir, seed in seed_of.items()}
    assert set(dirs) == {"seed=0", "seed=1", "seed=2"} and set(found.values()) == {"new"}
    fingerprint = {seed: config_fingerprint(yaml.safe_load(_hsv(*common, f"seed={seed}", "--cfg", "job", "--resolve").stdout))
                   for seed in (0, 1)}
    dirs["seed=0"].mkdir(parents=True)
    (dirs["seed=0"] / "metrics.json").write_text(json.dumps({"status": "complete", "fingerprint": fingerprint[0]}))
    (dirs["seed=1"] / "checkpoint").mkdir(parents=True)
    (dirs["seed=1"] / "run.json").write_text(json.dumps({"fingerprint": fingerprint[1]}))
    torch.save({"epoch": 2, "step_in_epoch": 5}, dirs["seed=1"] / "checkpoint" / "last.pt")
    before = _snapshot(tmp_path)

    found, summary = states()
    assert {seed_of[run_dir]: state for run_dir, state in found.items()} == {
        "seed=0": "complete", "seed=1": "resumable from epoch 2", "seed=2": "new"}
    assert summary == "dry run: 3 jobs: 1 complete, 1 resumable, 0 would reuse, 1 new, 0 conflict, 0 invalid"
    assert _snapshot(tmp_path) == before
    assert sorted(sweep.iterdir()) == sorted([dirs["seed=0"], dirs["seed=1"]])  # no multirun.yaml, no dir for seed=2


def test_a_relative_glue_dir_names_the_same_runs_as_the_absolute_one(tmp_path):
    """A sweep run with GLUE_DIR=/abs/glue and relaunched with GLUE_DIR=../rel/glue (the same folder)
    finds its complete runs: the fingerprint sees the GLUE dir as an absolute path."""
    from hsv_exp.run_dir import config_fingerprint

    glue = tmp_path / "glue"
    (glue / "RTE").mkdir(parents=True)
    run_dir = tmp_path / "run"
    common = ["model=tiny", "task=rte", "select=top", "select.k=1", f"hydra.run.dir={run_dir}"]
    relative = os.path.relpath(glue, REPO)
    assert not os.path.isabs(relative)
    config = {where: yaml.safe_load(_hsv(*common, "--cfg", "job", "--resolve", env={"GLUE_DIR": where}).stdout)
              for where in (str(glue), relative)}
    assert config[relative]["task"]["glue_dir"] == relative  # the config keeps what the user wrote
    assert config_fingerprint(config[relative]) == config_fingerprint(config[str(glue)])
    other = yaml.safe_load(_hsv(*common, "--cfg", "job", "--resolve", env={"GLUE_DIR": str(tmp_path / "other")}).stdout)
    assert config_fingerprint(other) != config_fingerprint(config[str(glue)])  # another folder is another run
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps({"status": "complete", "fingerprint": config_fingerprint(config[str(glue)])}))
    lines = _hsv(*common, "dry_run=true", env={"GLUE_DIR": relative}).stdout.splitlines()
    assert lines[-1] == "dry run: 1 job: 1 complete, 0 resumable, 0 would reuse, 0 new, 0 conflict, 0 invalid", lines
