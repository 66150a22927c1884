"""Run dirs -> runs.csv, summary.md, figures (and robustness.md/.png) under results/<study>.

    python -m hsv_exp.results multirun/2025-01-01 outputs/ --out results/<study> [--notes FILE]
    python -m hsv_exp.results multirun/lowres --out results/lowres --report lowres   # runs.csv, paired.csv, tables.md, score_vs_n.png
    python -m hsv_exp.results multirun/pilot --out results/pilot --report pilot      # runs.csv, curves.md, curves.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hsv_exp.errors import HsvError
from hsv_exp.results import lowres, pilot, study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hsv_exp.results", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="folders searched recursively for run dirs")
    parser.add_argument("--out", required=True, type=Path, help="study folder, e.g. results/<study>")
    parser.add_argument("--notes", type=Path, help="a hand-written markdown file put at the top of summary.md "
                        "(the study's findings, citing the generated tables)")
    parser.add_argument("--report", choices=("study", "lowres", "pilot"), default="study",
                        help="study: the GLUE study's summary.md, claims and figures (default); lowres: the low-resource "
                        "study's paired.csv (each run against plain on its seed), tables.md (per task, N and condition, its claims "
                        "and costs) and score_vs_n.png; pilot: "
                        "the learned study's pilot, curves.md (dev score per epoch and lr, per task) and curves.png")
    args = parser.parse_args(argv)
    if args.report != "study" and args.notes:
        parser.error("--notes is for --report study: the low-resource and pilot findings are written by hand in <out>/summary.md")
    try:
        if args.report == "lowres":
            runs, written = lowres.aggregate(args.dirs, args.out)
        elif args.report == "pilot":
            runs, written = pilot.aggregate(args.dirs, args.out)
        else:
            runs, written = study.aggregate(args.dirs, args.out, notes=args.notes)
    except HsvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{sum(r.status == s for r in runs)} {s}" for s in ("complete", "failed", "scan-only", "incomplete"))
    print(f"{len(runs)} run dirs ({counts}) -> {', '.join(map(str, written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
