"""hsv_exp.results --report lowres over fake run dirs in the runs' formats (test_results' fixtures,
plus the keys the low-resource study reads), and over one real tiny run of every moving part."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hsv_exp.results.__main__ import main
from hsv_exp.results.lowres import aggregate

from conftest import REPO
from custom_task import write_task
from test_results import PNG_MAGIC, _metrics, _write

EPOCHS = {100: 20, 500: 6}
MEAN_LEN = 50.0
PER_TOKEN, PER_TOKEN_CACHED = 6.0e7, 2.0e7  # training FLOPs per token: first epoch, cached later epochs
STRATEGIES = {"plain": ("random", "none"), "ehft": ("ehft", "none"), "mvcr": ("random", "mvcr")}
WINDOW = "variability tolerance k=2"
# Best-epoch scores per (N, selection, strategy), one per seed 0, 1, 2.
SCORES = {
    (100, "all", "plain"): [0.50, 0.54, 0.52],
    (100, "all", "ehft"): [0.55, 0.56, 0.51],  # Δ vs plain: +5, +2, -1
    (100, "all", "mvcr"): [0.49, 0.52, 0.50],  # Δ: -1, -2, -2: does not help
    (100, "window", "plain"): [0.51, 0.53, 0.52],
    (100, "window", "ehft"): [0.52, 0.55, 0.52],
    (100, "window", "mvcr"): [0.53, 0.53, 0.52],
    (500, "all", "plain"): [0.60, 0.62, 0.64],
    (500, "all", "ehft"): [0.61, 0.62, 0.66],
    (500, "all", "mvcr"): [0.62, 0.63, 0.65],
    (500, "window", "plain"): [0.58, 0.60, 0.61],
    (500, "window", "ehft"): [0.58, 0.61, 0.61],
    (500, "window", "mvcr"): [0.59, 0.61],  # seed 2 is incomplete
}
# Last-epoch score = best - 0.01, except where a cell's last epoch falls further.
LAST_DROP = {(100, "all", "mvcr"): 0.05}
WALL = 100.0  # train_wall_s of every run but the reused one
# MVCR's cost against plain: its autoencoders' FLOPs per token and optimizer time (train_time_s), and a
# seed whose optimizer time a busy machine tripled (the medians in tables.md stay at MVCR_TIME).
MVCR_FLOPS, MVCR_TIME, SLOW_SEED = 1.5, 2.0, 2
# One run resumed on another machine in bf16: its time is not comparable with its fp32 plain pair's.
FP32, BF16_ELSEWHERE = {"dtype": "fp32", "cpu": {"processor": "CPU A"}}, {"dtype": "bf16", "cpu": {"processor": "CPU B"}}
OTHER_MACHINE = (500, "all", "ehft", 1)


def lowres_metrics(n: int, selection: str, strategy: str, seed: int, best: float, *, reused: bool = False) -> dict:
    window = selection == "window"
    last = best - LAST_DROP.get((n, selection, strategy), 0.01)
    mvcr = strategy == "mvcr"
    train_time = WALL / 2 * (MVCR_TIME * (3 if seed == SLOW_SEED else 1) if mvcr else 1)
    info = _metrics("rte", "full", "variability" if window else "all", 2, seed, best, last, head_layer=6,
                    train_fraction=0.5 if window else 1.0, train_time=train_time)
    head_init, regularizer = STRATEGIES[strategy]
    config = info["config"]
    config["task"]["max_train_examples"] = n
    config["select"]["rule"] = "tolerance" if window else "argmin"
    config["head_init"] = {"name": head_init, "method": "bitfit", "fraction": 0.1}
    config["regularizer"] = {"name": regularizer}
    config["train"].update(epochs=EPOCHS[n], num_threads=1, cache_frozen="auto")
    info.update(rule=config["select"]["rule"], num_train_examples=n,
                history=[{"epoch": epoch, "train/loss": 0.5, "dev/accuracy": best} for epoch in range(1, EPOCHS[n] + 1)])
    cost = MVCR_FLOPS if mvcr else 1.0
    info["compute"].update(mean_seq_len=MEAN_LEN, train_flops_per_token=cost * PER_TOKEN, train_flops_per_token_cached=cost * PER_TOKEN_CACHED,
                           train_wall_s=0.0 if reused else WALL, device="cpu",
                           precision=BF16_ELSEWHERE if (n, selection, strategy, seed) == OTHER_MACHINE else FP32)
    if reused:
        info["reused_from"] = "elsewhere"
    return info


def run_name(n: int, selection: str, strategy: str, seed: int) -> str:
    return f"+condition={'vartol_k2' if selection == 'window' else 'all'},+size=n{n},+strategy={strategy},seed={seed},task=rte"


@pytest.fixture()
def lowres_root(tmp_path: Path) -> Path:
    root = tmp_path / "multirun" / "lowres"
    for (n, selection, strategy), scores in SCORES.items():
        for seed, best in enumerate(scores):
            reused = (n, selection, strategy, seed) == (500, "window", "plain", 0)
            _write(root / run_name(n, selection, strategy, seed) / "metrics.json",
                   lowres_metrics(n, selection, strategy, seed, best, reused=reused))
    # seed 2 of N=500 window mvcr: started (its Hydra config, a checkpoint), not finished
    incomplete = root / run_name(500, "window", "mvcr", 2)
    (incomplete / ".hydra").mkdir(parents=True)
    config = lowres_metrics(500, "window", "mvcr", 2, 0.0)["config"]
    (incomplete / ".hydra" / "config.yaml").write_text(yaml.safe_dump({**config, "stage": "all"}))
    (incomplete / "checkpoint").mkdir()
    # a failed lpft job: its failed.json carries the config
    failed = lowres_metrics(100, "all", "plain", 0, 0.0)["config"]
    failed["head_init"]["name"] = "lpft"
    _write(root / run_name(100, "all", "lpft", 0) / "failed.json",
           {"status": "failed", "error": "out of memory", "task": "rte", "seed": 0, "config": failed})
    return root


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _mean_std(values: list[float]) -> str:
    values = [100 * v for v in values]
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def _table_row(text: str, *first_cells: str) -> list[str]:
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]
    [row] = [row for row in rows if row[:len(first_cells)] == list(first_cells)]
    return row


def _section(text: str, title: str) -> str:
    return text.split(f"### {title}\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]


def test_csv_has_one_row_per_run_with_the_cell_and_the_costs(lowres_root: Path, tmp_path: Path) -> None:
    runs, written = aggregate([lowres_root], tmp_path / "lowres")
    assert {p.name for p in written} == {"runs.csv", "paired.csv", "tables.md", "score_vs_n.png"}
    rows = _rows(tmp_path / "lowres" / "runs.csv")
    assert len(rows) == sum(map(len, SCORES.values())) + 2
    assert sorted(r["status"] for r in rows if r["status"] != "complete") == ["failed", "incomplete"]
    [row] = [r for r in rows if r["run_dir"].endswith(run_name(100, "window", "ehft", 1))]
    assert (row["task"], row["N"], row["seed"], row["selection"], row["strategy"]) == ("rte", "100", "1", WINDOW, "ehft")
    assert (row["head_layer"], row["window"], row["epochs"], row["best_epoch"]) == ("6", "5 6", "20", "2")
    assert (float(row["best_main"]), float(row["last_main"])) == (0.55, pytest.approx(0.54))
    # 100 examples x 50 tokens: the first epoch at the full per-token cost, 19 more from the cache
    assert float(row["train_flops"]) == pytest.approx(100 * MEAN_LEN * (PER_TOKEN + 19 * PER_TOKEN_CACHED))
    assert (float(row["train_time_s"]), float(row["train_wall_s"])) == (WALL / 2, WALL)
    [failed] = [r for r in rows if r["status"] == "failed"]
    assert (failed["strategy"], failed["N"], failed["error"], failed["best_main"]) == ("lpft", "100", "out of memory", "")
    [incomplete] = [r for r in rows if r["status"] == "incomplete"]
    assert (incomplete["strategy"], incomplete["N"], incomplete["selection"], incomplete["seed"]) == ("mvcr", "500", WINDOW, "2")
    assert (tmp_path / "lowres" / "score_vs_n.png").read_bytes()[:8] == PNG_MAGIC
    assert not (tmp_path / "lowres" / "summary.md").exists()  # the findings are hand-written


def test_tables_mean_std_per_cell_claims_and_missing_runs(lowres_root: Path, tmp_path: Path) -> None:
    aggregate([lowres_root], tmp_path / "lowres")
    tables = (tmp_path / "lowres" / "tables.md").read_text()
    scores = _section(tables, "rte (minilm, tuning=full; `dev/accuracy`)")
    row = _table_row(scores, "100", "whole model", "plain")
    assert row[3:7] == ["6 (1,2,3,4,5,6)", "3", _mean_std(SCORES[100, "all", "plain"]),
                        _mean_std([s - 0.01 for s in SCORES[100, "all", "plain"]])]
    assert row[8:] == ["20", f"{100 * MEAN_LEN * (PER_TOKEN + 19 * PER_TOKEN_CACHED) / 1e12:.1f}", "100.0%", "50.0", "100.0"]
    assert _table_row(scores, "500", WINDOW, "mvcr")[3:6] == ["6 (5,6)", "2", _mean_std(SCORES[500, "window", "mvcr"])]

    ehft = _section(tables, "EH-FT (BitFit-trained head) − plain fine-tuning (random head)")
    # N=100 whole model: Δ +5, +2, -1 -> mean +2.00, std 3.00; 2 wins, 1 loss
    assert _table_row(ehft, "rte", "100")[2] == "+2.00 ± 3.00 (2/1)"
    assert _table_row(ehft, "rte", "100")[3] == "+2.00 ± 3.00 (2/1)"  # the last epoch: the same 0.01 below best
    assert _table_row(ehft, "rte", "100")[4] == "+1.00 ± 1.00 (2/0)"  # window: +1, +2, 0
    assert _table_row(ehft, "mean over tasks", "100")[2] == "+2.00 over 1 task"
    assert _table_row(ehft, "mean over tasks and N", "every N")[2] == "+1.50 over 2 cells"  # N=100 +2.00, N=500 +1.00
    assert "Where it does not help (best-epoch mean Δ ≤ 0): nowhere." in ehft
    mvcr = _section(tables, "MVCR − plain fine-tuning")
    assert _table_row(mvcr, "rte", "100")[2] == "-1.67 ± 0.58 (0/3)"
    assert _table_row(mvcr, "rte", "100")[3] == "-5.67 ± 0.58 (0/3)"  # its last epoch falls 0.04 further
    assert _table_row(mvcr, "mean over tasks", "100")[2:4] == ["-1.67 over 1 task", "-5.67 over 1 task"]
    assert _table_row(mvcr, "rte", "500")[4] == "+1.00 ± 0.00 (2/0)"  # paired over seeds 0, 1 only
    assert "Where it does not help (best-epoch mean Δ ≤ 0): rte N=100 whole model (-1.67)." in mvcr
    assert "### LP-FT" not in tables  # no completed lpft run: no claim table

    missing = tables.split("## Missing runs\n", 1)[1].split("\n## ", 1)[0]
    assert f"- rte N=500 {WINDOW} mvcr (minilm, full): seed 2 (incomplete)" in missing
    assert "- rte N=100 whole model lpft (minilm, full): seed 0 (failed), 1 (not started), 2 (not started)" in missing
    assert missing.count("\n- ") == 5  # lpft at both N and both selections, and the incomplete mvcr seed
    # 35 complete runs, one reused (no cost): 34 x 100 s
    assert f"- cpu, 1 thread per run: {34 * WALL / 3600:.2f} h over 34 runs" in tables
    assert "out of memory" in tables.split("## Failed runs\n", 1)[1]


def test_paired_csv_and_cost_table_pair_each_run_with_plain_on_its_seed(lowres_root: Path, tmp_path: Path) -> None:
    aggregate([lowres_root], tmp_path / "lowres")
    rows = _rows(tmp_path / "lowres" / "paired.csv")
    # every complete ehft/mvcr run has its plain seed: 2 strategies x 2 N x 2 selections x 3 seeds, less the incomplete one
    assert len(rows) == 2 * 2 * 2 * 3 - 1 and {r["strategy"] for r in rows} == {"ehft", "mvcr"}
    [row] = [r for r in rows if (r["N"], r["selection"], r["strategy"], r["seed"]) == ("100", "whole model", "ehft", "0")]
    assert (float(row["best_delta"]), float(row["last_delta"])) == (pytest.approx(5.0), pytest.approx(5.0))
    assert (float(row["train_flops_ratio"]), float(row["train_time_ratio"])) == (pytest.approx(1.0), pytest.approx(1.0))
    mvcr = [r for r in rows if (r["N"], r["selection"], r["strategy"]) == ("100", "whole model", "mvcr")]
    assert [float(r["best_delta"]) for r in mvcr] == pytest.approx([-1.0, -2.0, -2.0])
    assert [float(r["last_delta"]) for r in mvcr] == pytest.approx([-5.0, -6.0, -6.0])
    assert [float(r["train_time_ratio"]) for r in mvcr] == pytest.approx([MVCR_TIME, MVCR_TIME, 3 * MVCR_TIME])
    assert [float(r["train_flops_ratio"]) for r in mvcr] == pytest.approx([MVCR_FLOPS] * 3)

    cost = _section((tmp_path / "lowres" / "tables.md").read_text(), "MVCR")
    # the median ignores the slow seed's tripled time; the window's N=500 cell pairs two seeds
    assert _table_row(cost, "rte", "100")[2:] == ["1.50× / 2.00× (3)", "1.50× / 2.00× (3)"]
    assert _table_row(cost, "rte", "500")[3] == "1.50× / 2.00× (2)"
    assert _table_row(cost, "range over cells", "every N")[2] == "1.50–1.50× / 2.00–2.00×"
    # the run on another machine and precision keeps its FLOPs ratio and loses its time ratio
    [other] = [r for r in rows if (int(r["N"]), r["selection"], r["strategy"], int(r["seed"])) == (500, "whole model", "ehft", 1)]
    assert (float(other["train_flops_ratio"]), other["train_time_ratio"]) == (pytest.approx(1.0), "")
    assert _table_row(_section((tmp_path / "lowres" / "tables.md").read_text(), "EH-FT (BitFit-trained head)"),
                      "rte", "500")[2] == "1.00× / 1.00× (3)"


def test_cli_report_lowres_and_notes_refused(lowres_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "lowres"
    assert main([str(lowres_root), "--out", str(out), "--report", "lowres"]) == 0
    assert "35 complete, 1 failed, 0 scan-only, 1 incomplete" in capsys.readouterr().out
    assert f"--out {out} --report lowres" in (out / "tables.md").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main([str(lowres_root), "--out", str(out), "--report", "lowres", "--notes", "x.md"])
    assert exit_info.value.code == 2 and "--notes is for --report study" in capsys.readouterr().err


def test_a_real_tiny_ehft_mvcr_run_aggregates(tmp_path: Path) -> None:
    """The keys read here are the ones a real run writes: EH-FT (BitFit) + MVCR on the tiny model."""
    run_dir = tmp_path / "runs" / "ehft_mvcr"
    command = [sys.executable, "-m", "hsv_exp", f"hydra.run.dir={run_dir}", "model=tiny", "logger=none", *write_task(tmp_path / "data"),
               "select=all", "head_init=ehft", "regularizer=mvcr", "regularizer.dims=[8]", "task.max_train_examples=40",
               "train.epochs=3", "train.batch_size=8", "train.num_threads=1"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    aggregate([tmp_path / "runs"], tmp_path / "lowres")
    [row] = _rows(tmp_path / "lowres" / "runs.csv")
    assert (row["status"], row["strategy"], row["selection"], row["N"], row["epochs"]) == ("complete", "ehft+mvcr", "whole model", "40", "3")
    info = json.loads((run_dir / "metrics.json").read_text())
    compute = info["compute"]
    assert [record["stage"] for record in info["history"]] == ["head_init", "train", "train"]
    # select=all caches nothing: every epoch at the epoch-mean per-token cost of both stages (MVCR's HAEs included)
    assert float(row["train_flops"]) == pytest.approx(compute["mean_seq_len"] * 40 * 3 * compute["train_flops_per_token"])
    assert compute["regularizer_extra_train_flops_per_token"] > 0 and float(row["train_wall_s"]) == compute["train_wall_s"] > 0
