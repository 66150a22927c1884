"""`python -m hsv_exp key=value ...`: compose the config, run, return the optimized metric.

User errors print one line (`error: ...`) and exit 2. In a multirun a failing job writes
failed.json into its run dir and returns, so the rest of the sweep goes on.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from hsv_exp.checkpoint import Preempted
from hsv_exp.config import register_configs, to_objects
from hsv_exp.errors import HsvError
from hsv_exp.quiet import quiet_libraries
from hsv_exp.atomic import write_json_atomic
from hsv_exp.run import identity, run

log = logging.getLogger("hsv_exp")
register_configs()


def execute(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    config_dict = OmegaConf.to_container(cfg, resolve=True)
    objects = None
    try:
        objects = to_objects(cfg)
        if objects.dry_run:
            print(f"[dry-run] {run_dir}\n{OmegaConf.to_yaml(config_dict)}", flush=True)
            return None
        quiet_libraries()
        # A sweep's runs share its dir: one wandb dir (`wandb leet multirun/<study>/wandb` browses them
        # together), one scan per distinct scanned data set, and the registry of equivalent runs.
        sweep_dir = Path(HydraConfig.get().sweep.dir) if multirun else None
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


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    return execute(cfg)


def main() -> None:
    # dry_run=true lists jobs without running them, so it must not submit them to a cluster either:
    # whatever launcher was asked for, the jobs are expanded by the in-process local launcher.
    if any(arg.lower() == "dry_run=true" for arg in sys.argv[1:]):
        sys.argv = [("launcher=local" if arg.startswith("launcher=") else arg) for arg in sys.argv]
    _hydra_main()
