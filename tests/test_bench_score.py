"""The time-to-score benchmark: which configurations share a run, how times to the Trainer's score
are read off the points, and (slow) the quick mode end to end on the tiny model in fresh processes.
No timing is asserted beyond its order (timings of a tiny model on a shared machine mean nothing)."""

import csv
import json
from types import SimpleNamespace

import pytest

from benchmarks import score, score_report

MINILM_SCORES = (10.0, 8.0, 6.0, 2.0, 2.5, 2.1, 1.98)  # nu(0..6): argmin layer 6 (= top's head), tolerance layer 3


def by_name(planned):
    return {config.name: (source.name, extra) for config, source, extra in planned}


@pytest.mark.parametrize("auto", ["fp32", "bf16"])
def test_plan_runs_each_distinct_training_once(monkeypatch, auto):
    monkeypatch.setattr(score, "resolved_precision",
                        lambda requested, options: SimpleNamespace(name=auto if requested == "auto" else "fp32"))
    configs = score.configurations(trainer_bf16=auto == "bf16")
    planned = by_name(score.plan("rte", configs, score.Options(), {"scores": list(MINILM_SCORES), "scan_s": 7.5}))
    assert list(planned) == [config.name for config in configs]
    # argmin picks top's window: top's run plus the scan; tolerance picks layer 3: a run of its own
    assert planned["var-argmin-full-fp32"] == ("top-full-fp32", 7.5)
    assert planned["var-argmin-adapter-auto"] == ("top-adapter-auto" if auto == "bf16" else "top-adapter-fp32", 7.5)
    assert planned["var-tolerance-adapter-fp32"] == ("var-tolerance-adapter-fp32", 0.0)
    # auto resolving to fp32 trains what fp32 trains; a Trainer row is always its own
    assert planned["all-lora-auto"] == ("all-lora-fp32" if auto == "fp32" else "all-lora-auto", 0.0)
    assert planned["var-tolerance-full-auto"] == ("var-tolerance-full-fp32" if auto == "fp32" else "var-tolerance-full-auto", 0.0)
    assert all(planned[name] == (name, 0.0) for name in planned if name.startswith("trainer-"))
    assert ("trainer-full-bf16" in planned) == (auto == "bf16")


def fake_result(points, trainable=1000, wall=None, precision="fp32"):
    return {"points": [{"epoch": epoch, "elapsed_s": seconds, "metrics": {"dev/accuracy": value}}
                       for epoch, (seconds, value) in enumerate(points, start=1)],
            "main_metric": "dev/accuracy", "trainable_params": trainable, "wall_s": wall or points[-1][0] + 2,
            "precision": {"dtype": precision, "reason": "requested"}, "num_train_examples": 100}


def fake_report(rows, stem="score_cpu") -> score_report.Report:
    budget = {"epochs": 2, "batch_size": 16, "lr": 5e-5, "pet_lr": 5e-4, "warmup_ratio": 0.06, "max_length": 128}
    return score_report.Report(score.Options(tasks=("rte",)), "python -m benchmarks.score (test)", "cpu", {"cpu": "test"},
                               {"dtype": "bf16", "reason": "measured"}, ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0)), {"rte": rows},
                               {"rte": budget}, {"rte": None}, score.REFERENCE, 60.0, 2, stem)


def test_report_times_each_configuration_to_the_trainers_final_score(tmp_path):
    trainer = score.Configuration("trainer", "full")
    top = score.Configuration("hsv_exp", "adapter", "top")
    variability = score.Configuration("hsv_exp", "adapter", "variability")
    full = score.Configuration("hsv_exp", "full")
    lora = score.Configuration("hsv_exp", "lora")
    top_result = fake_result([(30.0, 0.65), (60.0, 0.695)])
    rows = [score.Row(trainer, trainer.label(2), fake_result([(100.0, 0.60), (200.0, 0.70)])),
            score.Row(top, top.label(2), top_result),
            score.Row(variability, variability.label(2), top_result, measured_as=top.label(2), extra_s=50.0),
            score.Row(full, full.label(2), fake_result([(80.0, 0.55), (160.0, 0.68)])),
            score.Row(lora, lora.label(2), None, note="not run yet")]
    report = fake_report(rows)
    summaries = score_report.summarize(report, "rte")
    assert score_report.bar(report, "rte") == pytest.approx(69.0)  # the Trainer's final 70 less 1 point
    assert [summary.time_s for summary in summaries] == [200.0, 60.0, 110.0, None, None]  # 69.5 reaches 69; 68 never
    assert summaries[1].fraction == pytest.approx(0.3) and summaries[2].fraction == pytest.approx(0.55)
    assert summaries[2].wall_s == pytest.approx(62.0 + 50.0)  # the borrowed scan counts in its total too
    assert score_report.target_met(report, "rte") is True

    paths = score_report.write(report, tmp_path, "score_cpu")
    assert all(path.stat().st_size > 0 for path in paths) and not list(tmp_path.glob("*.tmp"))
    text = paths[0].read_text()
    assert "target ≤ 0.5 met" in text and "| never |" in text and "not run yet" in text
    assert f"measured as {top.label(2)} + 50.0 s scan" in text
    points = list(csv.DictReader(paths[1].open()))
    assert len(points) == 8  # every point of every finished row; none for the row not run yet
    assert [float(point["elapsed_s"]) for point in points if point["config"] == variability.name] == [80.0, 110.0]

    # without the Trainer's result nothing is timed, and the target is undecided
    pending = fake_report([score.Row(trainer, trainer.label(2), None, note="not run yet"), *rows[1:]])
    assert score_report.target_met(pending, "rte") is None
    assert all(summary.time_s is None for summary in score_report.summarize(pending, "rte"))
    assert "has not finished" in score_report.markdown(pending)


@pytest.mark.slow
def test_quick_mode_runs_every_configuration_in_its_own_process_and_resumes(glue_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(glue_dir))
    options = score.Options(tasks=("rte",), model="tiny", num_examples=64, epochs=2, max_eval_examples=64, threads=1,
                            configs=("trainer-full-fp32", "var-argmin-adapter-fp32"), work_dir=tmp_path / "work")
    paths, report = score.run_benchmark(options, tmp_path / "out", "python -m benchmarks.score (test)", log=lambda line: None)
    assert [path.name for path in paths] == ["score_cpu.md", "score_cpu.csv", "score_cpu.png"]
    rows = report.tasks["rte"]
    assert [row.config.name for row in rows] == ["trainer-full-fp32", "var-argmin-adapter-fp32"]
    for row in rows:
        assert row.result is not None, row.note
        elapsed = [point["elapsed_s"] for point in row.points]
        assert [point["epoch"] for point in row.points] == [1, 2]
        assert 0 < elapsed[0] < elapsed[1] < row.result["wall_s"]
        assert row.result["num_train_examples"] == 64  # the Trainer reads hsv_exp's subsample
    variability, scores = rows[1].result, report.scans["rte"]["scores"][1:]
    assert variability["scan_s"] > 0 and variability["head_layer"] == 1 + scores.index(min(scores))  # the argmin over 1..L
    points = list(csv.DictReader(paths[1].open()))
    assert {point["config"] for point in points} == {"trainer-full-fp32", "var-argmin-adapter-fp32"} and len(points) == 4
    assert "`python -m benchmarks.score (test)`" in paths[0].read_text()

    # the same command again: nothing runs, the report is rewritten from the kept results
    kept = {row.config.name: json.loads((options.root / "rte" / row.config.name / "result.json").read_text()) for row in rows}
    _, again = score.run_benchmark(options, tmp_path / "out", "python -m benchmarks.score (test)", log=lambda line: None)
    assert {row.config.name: row.result for row in again.tasks["rte"]} == kept
