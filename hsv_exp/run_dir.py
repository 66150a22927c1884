"""A run's directory: its fingerprint, what it already holds, the result files, the sweep's
registry of equivalent runs.

Files (all written atomically): run.json (which config the dir's checkpoint belongs to),
variability.json (hsv_exp.scan), checkpoint/last.pt (during training), metrics.json (only when the
run completed), failed.json (cli.py). A dir whose metrics.json is complete for the same fingerprint
is not run again; one with a checkpoint resumes from it. In a sweep, <sweep_dir>/equivalent/<key>.json
names the completed run that trained a given model on given data, so an equivalent run reuses it.

`inspect` reads all of it without writing anything: the run starts from it, and the dry run
(hsv_exp.dry_run) reports it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from hsv_exp.atomic import write_json_atomic
from hsv_exp.config import NOT_SEMANTIC, Config, absolute_paths, drop_keys, fingerprint_view, keys_marked
from hsv_exp.errors import HsvError
from hsv_exp.selection import Selection

log = logging.getLogger("hsv_exp")

CHECKPOINT = Path("checkpoint") / "last.pt"
# A head init's stage 1 (hsv_exp.head_init) trains in this subdir of the run dir: its own checkpoint
# while it runs, the pretrained head once done. It is part of its run, never a run of its own.
STAGE1_DIR = "head_init"


def semantic_config(config: dict, drop: tuple[str, ...] = ()) -> dict:
    """The resolved config minus the keys that do not change what a run computes (NOT_SEMANTIC in
    the schema), and minus the groups in `drop`. Local paths (PATH keys: the GLUE dir, a custom
    task's files, a local model dir) are seen as absolute ones, so GLUE_DIR=../shared/glue and
    GLUE_DIR=/work/shared/glue name the same runs."""
    return absolute_paths(drop_keys(fingerprint_view(config), (*keys_marked(NOT_SEMANTIC), *drop)))


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_fingerprint(config: dict) -> str:
    return _digest(semantic_config(config))


def identity(cfg: Config) -> dict:
    """The fields every result file carries, so results can be grouped without the config."""
    return {"task": cfg.task.name, "model": cfg.model.name, "tuning": cfg.tuning.name, "select": cfg.select.name,
            "rule": cfg.select.rule, "k": cfg.select.k, "seed": cfg.seed, "metric": cfg.metric.name,
            "pooling": cfg.metric.pooling, "study": cfg.study}


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------- what a dir holds
@dataclass(frozen=True)
class RunState:
    """What `run_dir` holds for a config with `fingerprint`.

    kind: complete (metrics.json of this config) | conflict (results or a checkpoint of another
    config: the run refuses) | resumable (a checkpoint of this config) | new."""

    kind: str
    metrics: dict | None = None  # complete: the metrics.json
    epoch: int | None = None  # resumable: the epoch the checkpoint is in
    reason: str = ""  # conflict: the one-line error the run raises


def inspect(run_dir: Path, fingerprint: str, resume: bool = True, read_epoch: bool = True,
            scan_only: bool = False) -> RunState:
    """Reads the dir, writes nothing. `read_epoch` loads the checkpoint to report its epoch.
    `scan_only` (stage=scan): the run's result is variability.json, complete when run.json names
    this config (a dir without run.json, from before it existed, is new: its scan is reused by key)."""

    def conflict(holding: str) -> RunState:
        return RunState("conflict", reason=f"{holding} of a run with a different config; use another hydra.run.dir "
                                           "or delete it")

    metrics_path = run_dir / "metrics.json"
    previous = _read_json(metrics_path) if resume else None
    if previous is not None:
        if previous.get("status") == "complete" and previous.get("fingerprint") == fingerprint:
            return RunState("complete", metrics=previous)
        return conflict(f"{metrics_path} holds the results")
    marker = _read_json(run_dir / "run.json")
    scan = _read_json(run_dir / "variability.json") if scan_only else None
    checkpoint = (run_dir / CHECKPOINT.parent).exists()
    if marker is not None and marker.get("fingerprint") != fingerprint and (scan is not None or checkpoint):
        return conflict(f"{run_dir} holds {'a scan' if scan is not None else 'a checkpoint'}")
    if scan is not None and marker is not None and resume:
        return RunState("complete", metrics=scan)
    if resume and (run_dir / CHECKPOINT).is_file():
        epoch = None
        if read_epoch:
            import torch  # only here: the dry run reads no checkpoint unless there is one

            epoch = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=False).get("epoch")
        return RunState("resumable", epoch=epoch)
    return RunState("new")


def start(run_dir: Path, cfg: Config, fingerprint: str) -> dict | None:
    """Claim `run_dir` for this config: the previous metrics if it is already complete (the run is
    skipped), else None after marking the dir; raises HsvError when it holds another config's run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    state = inspect(run_dir, fingerprint, cfg.resume, read_epoch=False, scan_only=cfg.stage == "scan")
    if state.kind == "complete":
        log.info("run already complete in %s: skipping (resume=false to run again)", run_dir)
        return state.metrics
    if state.kind == "conflict":
        raise HsvError(state.reason)
    (run_dir / "failed.json").unlink(missing_ok=True)
    write_json_atomic(run_dir / "run.json", {**identity(cfg), "fingerprint": fingerprint})
    return None


def write_metrics(run_dir: Path, metrics: dict) -> None:
    write_json_atomic(run_dir / "metrics.json", metrics)


def clean_checkpoint(run_dir: Path) -> None:
    """Delete checkpoint/last.pt (and the dir when empty) of a completed run."""
    (run_dir / CHECKPOINT).unlink(missing_ok=True)
    if (run_dir / "checkpoint").is_dir() and not any((run_dir / "checkpoint").iterdir()):
        (run_dir / "checkpoint").rmdir()


# ---------------------------------------------------------------- equivalent runs
def equivalent_key(config_dict: dict, selection: Selection) -> str:
    """Two runs with the same key train the same model on the same data with the same seed: the
    config minus how the layers were chosen (select, scan), plus the layers that were chosen."""
    semantic = semantic_config(config_dict, drop=("select", "scan"))
    semantic["layers"] = [selection.head_layer, list(selection.tuned_layers), selection.tune_embeddings]
    return _digest(semantic)


def registry_path(sweep_dir: Path, config_dict: dict, selection: Selection) -> Path:
    return sweep_dir / "equivalent" / f"{equivalent_key(config_dict, selection)}.json"


def equivalent_source(registry: Path, sweep_dir: Path, run_dir: Path) -> tuple[str, dict] | None:
    """(its dir relative to the sweep dir, its metrics) of the completed run the registry names, unless
    that is `run_dir` itself; None if there is none. Reads only."""
    entry = _read_json(registry)
    if entry is None:
        return None
    relative = entry["run_dir"]
    source = sweep_dir / relative
    previous = _read_json(source / "metrics.json")
    if source.resolve() == run_dir.resolve() or previous is None or previous.get("status") != "complete":
        return None
    return relative, previous


def register(registry: Path, sweep_dir: Path, run_dir: Path) -> None:
    write_json_atomic(registry, {"run_dir": str(run_dir.resolve().relative_to(sweep_dir.resolve()))})
