"""scripts/trainer_bar.py's majority-class baseline, against a count of the GLUE files themselves."""

import csv
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import trainer_bar  # noqa: E402


def _labels(path, column):
    with open(path, encoding="utf-8-sig", newline="") as f:
        return [row[column] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


def test_majority_baselines_match_the_files(glue_dir, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(glue_dir))
    train, dev = _labels(glue_dir / "MRPC" / "train.tsv", "Quality"), _labels(glue_dir / "MRPC" / "dev.tsv", "Quality")
    majority = max(set(train), key=train.count)
    assert majority == "1"  # so predicting it everywhere has recall 1: F1 = 2p / (1 + p), p = its share of dev
    share = dev.count(majority) / len(dev)
    assert trainer_bar.majority("mrpc") == f"{100 * 2 * share / (1 + share):.1f}"
    train, dev = _labels(glue_dir / "RTE" / "train.tsv", "label"), _labels(glue_dir / "RTE" / "dev.tsv", "label")
    majority = max(set(train), key=train.count)
    assert trainer_bar.majority("rte") == f"{100 * dev.count(majority) / len(dev):.1f}"
    assert trainer_bar.majority("stsb").startswith("—")


@pytest.mark.parametrize("argv", [["--tasks", "qqp"], ["--tasks", "rte,nope"]])
def test_unknown_task_is_one_clear_error(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        trainer_bar.main(argv)
    assert exited.value.code == 2 and "unknown" in capsys.readouterr().err
