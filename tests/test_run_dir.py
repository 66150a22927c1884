"""run_dir.inspect: what a run dir holds for a config, read without writing (the run's skip/resume/
refuse decision and the dry run's states both come from it)."""

import json

import pytest
import torch

from hsv_exp.run_dir import CHECKPOINT, inspect

OURS, THEIRS = "f" * 64, "0" * 64


def write(run_dir, name, value):
    path = run_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def checkpoint(run_dir, epoch=2):
    (run_dir / CHECKPOINT).parent.mkdir(parents=True)
    torch.save({"epoch": epoch}, run_dir / CHECKPOINT)


def test_an_empty_dir_is_new(tmp_path):
    assert inspect(tmp_path, OURS).kind == "new"


def test_results_of_this_config_are_complete_and_of_another_a_conflict(tmp_path):
    write(tmp_path, "metrics.json", {"status": "complete", "fingerprint": OURS})
    assert inspect(tmp_path, OURS).metrics["fingerprint"] == OURS
    state = inspect(tmp_path, THEIRS)
    assert state.kind == "conflict"
    assert state.reason == (f"{tmp_path / 'metrics.json'} holds the results of a run with a different config; "
                            "use another hydra.run.dir or delete it")
    assert inspect(tmp_path, THEIRS, resume=False).kind == "new"  # resume=false: the run starts over


def test_a_checkpoint_resumes_only_its_own_config(tmp_path):
    write(tmp_path, "run.json", {"fingerprint": OURS})
    checkpoint(tmp_path, epoch=3)
    state = inspect(tmp_path, OURS)
    assert (state.kind, state.epoch) == ("resumable", 3)
    assert inspect(tmp_path, OURS, read_epoch=False).epoch is None
    assert inspect(tmp_path, THEIRS).reason == (f"{tmp_path} holds a checkpoint of a run with a different config; "
                                                "use another hydra.run.dir or delete it")
    assert inspect(tmp_path, THEIRS, resume=False).kind == "conflict"  # even resume=false does not overwrite it


@pytest.mark.parametrize("marker", [True, False])
def test_a_scan_only_run_is_complete_once_its_scan_is_written(tmp_path, marker):
    if marker:
        write(tmp_path, "run.json", {"fingerprint": OURS})
    write(tmp_path, "variability.json", {"best_layer": 2})
    assert inspect(tmp_path, OURS).kind == "new"  # a training run: the scan alone is not its result
    state = inspect(tmp_path, OURS, scan_only=True)
    if not marker:  # from before run.json existed: the run reuses the scan by its key
        assert state.kind == "new"
        return
    assert (state.kind, state.metrics) == ("complete", {"best_layer": 2})
    assert inspect(tmp_path, THEIRS, scan_only=True).reason == (
        f"{tmp_path} holds a scan of a run with a different config; use another hydra.run.dir or delete it")
