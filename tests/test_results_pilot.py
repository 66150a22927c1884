"""python -m hsv_exp.results --report pilot over run dirs in the format runs write (metrics.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hsv_exp.results.__main__ import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def pilot_run(root: Path, task: str, lr: float, scores: list[float], key: str = "dev/accuracy") -> None:
    history = [{"epoch": epoch, "train/loss": 0.7 - 0.1 * epoch, key: score, "epoch_time_s": 10.0}
               for epoch, score in enumerate(scores, start=1)]
    best = max(history, key=lambda record: record[key])
    metrics = {"status": "complete", "task": task, "model": "minilm", "tuning": "full", "select": "all", "rule": "argmin",
               "k": 2, "seed": 0, "main_metric": key.split("/")[1], "optimized_metric": key, "num_train_examples": 2490,
               "best": best, "last": history[-1], "history": history, "compute": {"train_time_s": 30.0 * len(scores)},
               "config": {"task": {"name": task, "main_metric": key.split("/")[1]}, "tuning": {"name": "full", "lr": None},
                          "train": {"lr": lr}, "seed": 0}}
    run_dir = root / f"task={task},train.lr={lr}"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_pilot_report_tabulates_each_lr_curve_and_stars_the_best_epoch(tmp_path):
    root = tmp_path / "multirun" / "pilot"
    pilot_run(root, "rte", 1e-4, [0.50, 0.61, 0.58])
    pilot_run(root, "rte", 5e-5, [0.48, 0.55, 0.57])
    pilot_run(root, "mrpc", 5e-5, [0.81, 0.86], key="dev/f1")
    (root / "task=rte,train.lr=0.0002" / ".hydra").mkdir(parents=True)  # started, not finished
    out = tmp_path / "results" / "pilot"
    assert main([str(root), "--out", str(out), "--report", "pilot"]) == 0
    text = (out / "curves.md").read_text()
    assert "| 5e-05 | 48.0 | 55.0 | 57.0* | 0.400 | 90 |" in text  # lr ascending, the best starred
    assert "| 0.0001 | 50.0 | 61.0* | 58.0 | 0.400 | 90 |" in text
    assert "| 5e-05 | 81.0 | 86.0* | 0.500 | 60 |" in text and text.index("## mrpc") < text.index("## rte")
    assert "task=rte,train.lr=0.0002" in text.split("## Incomplete runs")[1]
    assert (out / "curves.png").read_bytes().startswith(PNG_MAGIC) and (out / "runs.csv").is_file()
    with pytest.raises(SystemExit) as refused:  # the pilot's findings are written by hand, not with --notes
        main([str(root), "--out", str(out), "--report", "pilot", "--notes", "x.md"])
    assert refused.value.code == 2
