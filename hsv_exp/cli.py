"""`python -m hsv_exp key=value ...`: compose the config, run, return the optimized metric.

User errors print one line (`error: ...`) and exit 2. In a multirun a failing job writes
failed.json into its run dir and returns, so the rest of the sweep goes on.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from hsv_exp import dry_run
from hsv_exp.checkpoint import Preempted
from hsv_exp.config import register_configs, to_config
from hsv_exp.errors import HsvError
from hsv_exp.quiet import quiet_libraries
from hsv_exp.atomic import write_json_atomic
from hsv_exp.run_dir import identity

log = logging.getLogger("hsv_exp")
register_configs()
dry_run.register()


def execute(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    config_dict = OmegaConf.to_container(cfg, resolve=True)
    objects = None
    try:
        objects = to_config(cfg)
        quiet_libraries()
        # A sweep's runs share its dir: one wandb dir (`wandb leet multirun/<study>/wandb` browses them
        # together), one scan per distinct scanned data set, and the registry of equivalent runs.
        sweep_dir = Path(HydraConfig.get().sweep.dir) if multirun else None
        from hsv_exp.run import run  # here: torch and transformers load only when something runs

        metrics = run(objects, config_dict, run_dir, sweep_dir=sweep_dir)
        if objects.stage == "scan":
            return None
        return float(metrics["best"][metrics["optimized_metric"]])
    except Preempted:
        sys.exit(143)  # checkpoint saved; the same command resumes (128 + SIGTERM)
    except Exception as exc:
        user_error = isinstance(exc, HsvError)
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        failure = {"status": "failed", "error": message, "error_type": type(exc).__name__,
                   **(identity(objects) if objects is not None else {}), "config": config_dict}
        if not user_error:
            failure["traceback"] = traceback.format_exc()
        write_json_atomic(run_dir / "failed.json", failure)
        if multirun:
            log.error("job failed: %s (see %s)", message, run_dir / "failed.json")
            return None
        if user_error:
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
        raise


# An absolute path: with `python -m`, Hydra would read a relative one as a Python package.
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def compose(overrides=(), config_dir: str = CONF_DIR):
    """The Config that `python -m hsv_exp <overrides>` would run, composed without running it (for
    scripts and benchmarks). Hydra's global state is cleared before and after."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            return to_config(hydra_compose("config", overrides=list(overrides)))
    finally:
        GlobalHydra.instance().clear()


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    return execute(cfg)


def main() -> None:
    # dry_run=true lists jobs without running them (hsv_exp.dry_run): its sweeper replaces Hydra's, so
    # nothing is launched, submitted or written; a single run is listed as a sweep of one job.
    # `--cfg job` (Hydra's way to print one job's config) never reaches a sweeper.
    if any(arg.lower() == "dry_run=true" for arg in sys.argv[1:]):
        args = [("launcher=local" if arg.startswith("launcher=") else arg) for arg in sys.argv[1:]]
        if not any(arg in ("-m", "--multirun") for arg in args):
            args = ["--multirun", *args, "hydra.sweeper.single=true"]
        sys.argv = [sys.argv[0], *args, "hydra/sweeper=hsv_dry_run"]
    _hydra_main()


def run_in_child(overrides: Sequence[str], run_dir: Path, timeout: float | None = None) -> dict | None:
    """`python -m hsv_exp <overrides> hydra.run.dir=<run_dir>` in its own process (offline, W&B disabled,
    output discarded: the run dir keeps the log), unless `run_dir` already holds a finished run, so a
    script of many runs can be relaunched. -> the run's metrics.json, or None where it did not complete."""
    metrics = Path(run_dir) / "metrics.json"
    if not metrics.is_file():
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
        subprocess.run([sys.executable, "-m", "hsv_exp", *overrides, f"hydra.run.dir={run_dir}"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
    return json.loads(metrics.read_text()) if metrics.is_file() else None
