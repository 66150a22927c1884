"""Run dirs -> runs.csv, summary.md, figures (and robustness.md/.png) under results/<study>.

    python -m hsv_exp.results multirun/2025-01-01 outputs/ --out results/<study> [--notes FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hsv_exp.errors import HsvError
from hsv_exp.results.study import aggregate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hsv_exp.results", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="folders searched recursively for run dirs")
    parser.add_argument("--out", required=True, type=Path, help="study folder, e.g. results/<study>")
    parser.add_argument("--notes", type=Path, help="a hand-written markdown file put at the top of summary.md "
                        "(the study's findings, citing the generated tables)")
    args = parser.parse_args(argv)
    try:
        runs, written = aggregate(args.dirs, args.out, notes=args.notes)
    except HsvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{sum(r.status == s for r in runs)} {s}" for s in ("complete", "failed", "scan-only", "incomplete"))
    print(f"{len(runs)} run dirs ({counts}) -> {', '.join(map(str, written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
