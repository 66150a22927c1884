"""`dry_run=true`: list what a command would do, job by job, and write nothing anywhere.

    python -m hsv_exp -m -cd sweeps -cn study_1k dry_run=true

prints one line per job, `[dry-run] <run dir>  <state>`, where state is one of
  complete                   metrics.json of this config is there: the job is skipped
  resumable from epoch E     a checkpoint of this config is there: the job continues from it
  would reuse <dir>          a completed equivalent run of the sweep (same layers, data, seed)
  new                        nothing yet (a variability job's reuse is decided after its scan)
  conflict: ... / invalid: ...   the job would fail (another config's files / a bad value)
and then one `dry run: N jobs: ...` line with the counts.

It replaces Hydra's sweeper (cli.main adds `hydra/sweeper=hsv_dry_run`), so Hydra neither writes
multirun.yaml nor launches (and logs, and writes .hydra/ for) a job per configuration. Composing
with Hydra costs ~0.1 s a job, so each distinct combination of config groups is composed once and
the plain value overrides of each job are applied to a copy with OmegaConf; `hydra.job.override_dirname`
is then computed exactly as Hydra does. The fingerprints this gives are checked against full
composes (tests/test_fingerprints.py through scripts/study_fingerprints.py, which uses `job_configs`).
A sweep of PARALLEL_FROM jobs or more is listed by one forked process per CPU, each taking whole
group combinations; the lines are printed in job order. The 450-job study lists in 18-21 s on a
2-core machine (`python -m hsv_exp -m -cd sweeps -cn study_1k dry_run=true`; 126 s with Hydra's
own launcher, which also wrote every job's .hydra/).
"""

from __future__ import annotations

import concurrent.futures
import copy
import functools
import json
import multiprocessing as mp
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hsv_exp import run_dir as run_dir_lib
from hsv_exp.config import to_config
from hsv_exp.errors import HsvError


PARALLEL_FROM = int(os.environ.get("HSV_DRY_RUN_PARALLEL_FROM", 40))  # jobs; below this, forking costs more than it saves


@dataclass
class DryRunSweeperConf:
    _target_: str = "hydra_plugins.hsv_exp_dry_run.DryRunSweeper"  # Hydra instantiates plugins from hydra_plugins only
    max_batch_size: Optional[int] = None  # accepted like the basic sweeper's; all jobs are listed at once
    params: Optional[dict[str, str]] = None  # a sweep file's hydra.sweeper.params
    single: bool = False  # a single run (no -m): the run dir is hydra.run.dir


def register() -> None:
    ConfigStore.instance().store(group="hydra/sweeper", name="hsv_dry_run", node=DryRunSweeperConf, provider="hsv_exp")


def job_configs(config_loader, master: DictConfig, jobs: list[list[str]]) -> Iterator[tuple[list[str], DictConfig, DictConfig]]:
    """(overrides, the job's config without its hydra node, its hydra node) of every job, as Hydra's
    launchers compose them.

    Each distinct combination of config groups is composed once; its hydra node is installed in
    HydraConfig once, and per job only what a job changes there (its overrides, override_dirname)
    is updated in place, so `${hydra:...}` resolves as in the job. Yielded configs are reused for
    the next job of the same combination: read them before asking for the next one."""
    from hydra._internal.config_repository import CachingConfigRepository

    # Every compose reads the same yaml files: one cache for all of them (Hydra makes one per compose).
    if not isinstance(config_loader.repository, CachingConfigRepository):
        config_loader.repository = CachingConfigRepository(config_loader.repository)
    parser = OverridesParser.create(config_loader=config_loader)
    groups: dict[str, bool] = {}
    composed: dict[tuple[str, ...], DictConfig] = {}
    current: tuple | None = None  # the combination whose hydra node is installed, and its job config

    def is_group(key: str) -> bool:
        if key not in groups:
            parent, _, name = key.rpartition("/")
            groups[key] = name in config_loader.list_groups(parent)
        return groups[key]

    for job in jobs:
        parsed = parser.parse_overrides(job)
        grouped = tuple(override.input_line for override in parsed if is_group(override.key_or_group))
        values = [override for override in parsed if not is_group(override.key_or_group)]
        if any(override.is_delete() or override.package for override in values):
            grouped = tuple(job)  # rare forms: compose this job fully
            values = []
        if grouped not in composed:
            composed[grouped] = config_loader.load_sweep_config(master, list(grouped))
        if current is None or current[0] != grouped:
            HydraConfig.instance().set_config(composed[grouped])  # a read-only copy of its hydra node
            job_cfg = copy.deepcopy(composed[grouped])
            with open_dict(job_cfg):
                del job_cfg["hydra"]
            current = (grouped, job_cfg)
        job_cfg = current[1]
        # Every job of a combination sets the same keys, so each overwrites the last. The composed
        # config gets them too: the hydra node's interpolations (sweep.dir's ${study}) resolve against it.
        for target in (job_cfg, composed[grouped]):
            for override in values:
                if override.is_add() or override.is_force_add():
                    with open_dict(target):
                        OmegaConf.update(target, override.key_or_group, override.value(), merge=True, force_add=True)
                else:
                    OmegaConf.update(target, override.key_or_group, override.value(), merge=True)
        hydra = HydraConfig.get()
        dirname = hydra.job.config.override_dirname
        override_dirname = get_overrides_dirname(overrides=parsed, exclude_keys=dirname.exclude_keys,
                                                 item_sep=dirname.item_sep, kv_sep=dirname.kv_sep)
        # HydraConfig's node, and the composed config its interpolations resolve against (its parent)
        for node in (hydra, composed[grouped].hydra):
            with read_write(node), open_dict(node):
                node.overrides.task = list(job)
                node.job.override_dirname = override_dirname
        yield list(job), job_cfg, hydra


def _num_layers(model_cfg) -> int:
    """L of a model from its config only (no weights loaded)."""
    if model_cfg.random_init:
        kwargs = model_cfg.arch_kwargs
        return int(kwargs.get("num_hidden_layers", kwargs.get("n_layers", 12)))
    from transformers import AutoConfig

    from hsv_exp.backbone import resolve_path

    config = AutoConfig.from_pretrained(resolve_path(model_cfg.name_or_path))
    return int(getattr(config, "num_hidden_layers", getattr(config, "n_layers", 0)))


def _known_selection(cfg, run_dir: Path, layers_of: dict):
    """The job's selection when it is known without running anything: top/all/manual, or variability
    with the scan already in the run dir; else None."""
    from hsv_exp.selection import select_layers

    scores = None
    if cfg.select.name == "variability":
        scan = run_dir / "variability.json"
        if not scan.is_file():
            return None
        scores = json.loads(scan.read_text())["scores"]
    if cfg.model.name not in layers_of:
        layers_of[cfg.model.name] = _num_layers(cfg.model)
    try:
        return select_layers(cfg.select, layers_of[cfg.model.name], scores)
    except HsvError:
        return None


def job_state(config: DictConfig, run_dir: Path, sweep_dir: Path | None, layers_of: dict) -> tuple[str, str]:
    """(kind, the line's text) of one job; reads its run dir and the sweep's registry, writes nothing."""
    try:
        cfg = to_config(config)
    except HsvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return "invalid", f"invalid: {exc}"
    config_dict = OmegaConf.to_container(config, resolve=True)
    state = run_dir_lib.inspect(run_dir, run_dir_lib.config_fingerprint(config_dict), cfg.resume, scan_only=cfg.stage == "scan")
    if state.kind == "complete":
        return "complete", "complete"
    if state.kind == "conflict":
        return "conflict", f"conflict: {state.reason}"
    if state.kind == "resumable":
        return "resumable", f"resumable from epoch {state.epoch}"
    registry_dir = sweep_dir / "equivalent" if sweep_dir is not None else None
    if cfg.stage != "scan" and cfg.reuse_equivalent_runs and registry_dir is not None and registry_dir.is_dir():
        selection = _known_selection(cfg, run_dir, layers_of)
        if selection is not None:
            registry = run_dir_lib.registry_path(sweep_dir, config_dict, selection)
            source = run_dir_lib.equivalent_source(registry, sweep_dir, run_dir)
            if source is not None:
                return "reuse", f"would reuse {sweep_dir / source[0]}"
    return "new", "new"


def _job_lines(config_loader, master: DictConfig, jobs: list[list[str]], single: bool) -> list[tuple[str, str]]:
    """(kind, the printed line) of each job, in order."""
    lines, layers_of = [], {}
    for _, cfg, hydra in job_configs(config_loader, master, jobs):
        sweep_dir = None if single else Path(hydra.sweep.dir)
        run_dir = Path(hydra.run.dir) if single else sweep_dir / str(hydra.sweep.subdir)
        kind, text = job_state(cfg, run_dir, sweep_dir, layers_of)
        lines.append((kind, f"[dry-run] {run_dir}  {text}"))
    return lines


def _share(config_loader, jobs: list[list[str]], workers: int) -> list[list[int]]:
    """Job indices per worker: all jobs of one group combination go to the same worker, so each
    combination is composed once (a sweep file lists seeds outermost, so a plain split would not)."""
    parser = OverridesParser.create(config_loader=config_loader)
    is_group = functools.cache(lambda key: key.rpartition("/")[2] in config_loader.list_groups(key.rpartition("/")[0]))
    groups: dict[tuple, list[int]] = {}
    for index, job in enumerate(jobs):
        key = tuple(override.input_line for override in parser.parse_overrides(job) if is_group(override.key_or_group))
        groups.setdefault(key, []).append(index)
    shares: list[list[int]] = [[] for _ in range(workers)]
    for number, indices in enumerate(groups.values()):
        shares[number % workers].extend(indices)
    return [share for share in shares if share]


def list_jobs(config_loader, master: DictConfig, jobs: list[list[str]], single: bool = False) -> Counter:
    """Print one line per job and the summary line; returns the counts by state. A long sweep is
    listed by one forked process per CPU (composing dominates: ~0.1 s per group combination)."""
    workers = min(os.cpu_count() or 1, 8) if len(jobs) >= PARALLEL_FROM and "fork" in mp.get_all_start_methods() else 1
    shares = _share(config_loader, jobs, workers)  # each share lists its jobs combination by combination
    arguments = [(config_loader, master, [jobs[index] for index in share], single) for share in shares]
    if len(shares) == 1:
        parts = [_job_lines(*arguments[0])]
    else:
        with concurrent.futures.ProcessPoolExecutor(len(shares), mp_context=mp.get_context("fork")) as pool:
            parts = list(pool.map(_job_lines, *zip(*arguments)))
    by_index = {index: line for share, part in zip(shares, parts) for index, line in zip(share, part)}
    lines = [by_index[index] for index in range(len(jobs))]
    counts: Counter = Counter(kind for kind, _ in lines)
    for _, line in lines:
        print(line)
    order = ("complete", "resumable", "reuse", "new", "conflict", "invalid")
    names = {"reuse": "would reuse"}
    total = sum(counts.values())
    print(f"dry run: {total} job{'' if total == 1 else 's'}: " + ", ".join(f"{counts[kind]} {names.get(kind, kind)}" for kind in order),
          flush=True)
    return counts


def sweep(config_loader, master: DictConfig, params: dict[str, str], arguments: list[str], single: bool) -> None:
    """The sweeper's work: expand the sweep as Hydra's basic sweeper does, list the jobs; exit 2 if
    any job is invalid (a bad value fails before any work, as a real launch would)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parser = OverridesParser.create(config_loader=config_loader)
    overrides = parser.parse_overrides([*(f"{key}={value}" for key, value in params.items()), *arguments])
    jobs = BasicSweeper.split_arguments(overrides, None)[0]
    if list_jobs(config_loader, master, jobs, single)["invalid"]:
        sys.exit(2)
