"""scripts/lowres_budget.py's rates: total seconds over total tokens, per kind of token."""

import csv
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

from lowres_budget import done_jobs, measured_rates, price, run_time_since, split_cost  # noqa: E402
from test_results import _write  # noqa: E402
from test_results_lowres import WALL, lowres_metrics  # noqa: E402


def record(where, mvcr, train_s, train_tokens, eval_s, evaluations, task="rte"):
    return {"task": task, "where": where, "mvcr": mvcr, "train_s": train_s, "train_tokens": train_tokens,
            "eval_s": eval_s, "evaluations": evaluations}


def test_rates_are_ratios_of_sums_and_price_their_own_runs_exactly():
    # A short run with a high per-token cost must weigh by its tokens, not as one run of two.
    records = [record("all", False, 10.0, 1_000, 4.0, 2), record("all", False, 100.0, 100_000, 20.0, 10),
               record("all", True, 300.0, 100_000, 20.0, 10), record("window", False, 30.0, 100_000, 5.0, 10)]
    rates = measured_rates(records, {"rte": 1_000})
    assert rates["train_all"] == pytest.approx(110.0 / 101_000)  # the mean of per-run rates would be 0.0055
    assert rates["eval_all"] == pytest.approx(44.0 / 22_000)
    assert rates["mvcr_extra"] == pytest.approx(300.0 / 100_000 - 110.0 / 101_000)
    spent = sum(r["train_s"] + r["eval_s"] for r in records)
    priced = sum(price(rates, r["where"], r["mvcr"], 1, r["train_tokens"], r["evaluations"] * 1_000) for r in records)
    assert priced == pytest.approx(spent)


def test_missing_kinds_are_named():
    with pytest.raises(ValueError, match="train_all_mvcr, train_window"):
        measured_rates([record("all", False, 10.0, 1_000, 4.0, 2)], {"rte": 1_000})


def write_runs_csv(path, rows):
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([("status", "task", "run_dir")] + [(status, "rte", run_dir) for status, run_dir in rows])
    return path


def test_done_prices_the_complete_jobs_once_and_the_rest_as_left(tmp_path):
    job = "multirun/lowres/+condition={c},+size=n100,+strategy=plain,seed={s},task=rte"
    runs = write_runs_csv(tmp_path / "runs.csv", [
        ("complete", job.format(c="all", s=0)), ("incomplete", job.format(c="vartol_k2", s=0)),
        ("complete", job.format(c="vartol_k2", s=1))])
    done = done_jobs(runs)
    assert done == {("0", "n100", "rte", "plain", "all"), ("1", "n100", "rte", "plain", "vartol_k2")}
    job_seconds = {(seed, "n100", "rte", "plain", c): cost for seed in ("0", "1")
                   for c, cost in (("all", 10.0), ("vartol_k2", 4.0))}
    assert split_cost(job_seconds, done) == (14.0, 14.0)
    assert done_jobs(write_runs_csv(tmp_path / "twice.csv", [("complete", job.format(c="all", s=0))] * 2)) == {("0", "n100", "rte", "plain", "all")}


def test_done_refuses_jobs_outside_the_sweep(tmp_path):
    outside = write_runs_csv(tmp_path / "outside.csv", [("complete", "multirun/lowres/+condition=all,+size=n100,+strategy=plain,seed=9,task=rte")])
    with pytest.raises(ValueError, match="outside the sweep: 9/n100/rte/plain/all"):
        split_cost({("0", "n100", "rte", "plain", "all"): 1.0}, done_jobs(outside))
    other = write_runs_csv(tmp_path / "other.csv", [("complete", "multirun/study/seed=0,task=rte")])
    with pytest.raises(ValueError, match=r"line 2: .* names no \+size, \+strategy, \+condition"):
        done_jobs(other)
    (tmp_path / "bad.csv").write_text("task,N\nrte,100\n")
    with pytest.raises(ValueError, match="no run_dir or status column"):
        done_jobs(tmp_path / "bad.csv")



def test_run_time_since_is_the_compute_section_over_the_runs_started_after(tmp_path):
    def run(name, started, reused=False):
        info = lowres_metrics(100, "all", "plain", 0, 0.5, reused=reused)
        _write(tmp_path / name / "metrics.json", {**info, "started_unix_s": started})
        return tmp_path / name

    failed = tmp_path / "failed"
    _write(failed / "failed.json", {"status": "failed", "error": "out of memory", "started_unix_s": 300.0})
    incomplete = tmp_path / "incomplete"
    (incomplete / "checkpoint").mkdir(parents=True)
    runs = [run("a", 100.0), run("b", 200.0), run("before", 90.0), run("reused", 300.0, reused=True), failed, incomplete]
    # a and b: 2 x WALL s of train_wall_s, one thread each; the reused run costs nothing and is left out
    assert run_time_since(runs, 95.0) == [f"- cpu, 1 thread per run: {2 * WALL / 3600:.2f} h over 2 runs ({2 * WALL / 3600:.2f} core-hours)"]
    assert run_time_since(runs, 200.0) == []
