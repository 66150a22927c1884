"""scripts/lowres_budget.py's rates: total seconds over total tokens, per kind of token."""

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

from lowres_budget import measured_rates, price  # noqa: E402


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
