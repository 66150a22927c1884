"""Print `<overrides> <fingerprint>` for every job of a sweep file, as the jobs would compute them.

    python scripts/study_fingerprints.py [sweep name] [--every N]

GLUE_DIR is fixed to /glue so the output does not depend on where the data lives. The fingerprints
of sweeps/study_1k.yaml are kept in tests/data/study_1k_fingerprints.txt: a refactor that changes one would
make relaunching the study retrain (or refuse) runs that are already complete.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's hsv_exp, whatever the installed one is


def job_overrides(sweep: str) -> list[list[str]]:
    params = yaml.safe_load((REPO / "sweeps" / f"{sweep}.yaml").read_text())["hydra"]["sweeper"]["params"]
    return [list(combo) for combo in itertools.product(*([f"{key}={value}" for value in str(values).split(",")]
                                                         for key, values in params.items()))]


def fingerprints(sweep: str, every: int = 1) -> list[tuple[str, str]]:
    os.environ["GLUE_DIR"] = "/glue"
    from hsv_exp.config import register_configs
    from hsv_exp.dry_run import job_configs
    from hsv_exp.run_dir import config_fingerprint

    register_configs()
    rows = []
    with initialize_config_dir(str(REPO / "sweeps"), version_base="1.3"):
        master = compose(sweep, overrides=[f"hydra.sweep.dir=multirun/{sweep}"], return_hydra_config=True)
        # the dry run's composer (one Hydra compose per group combination): checked here against the
        # fingerprints that full per-job composes gave
        for overrides, cfg, _ in job_configs(GlobalHydra.instance().config_loader(), master, job_overrides(sweep)[::every]):
            rows.append((" ".join(overrides), config_fingerprint(OmegaConf.to_container(cfg, resolve=True))))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", nargs="?", default="study_1k")
    parser.add_argument("--every", type=int, default=1, help="only every N-th job")
    args = parser.parse_args()
    for overrides, fingerprint in fingerprints(args.sweep, args.every):
        print(overrides, fingerprint)
