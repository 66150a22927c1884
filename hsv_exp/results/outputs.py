"""What every report (`python -m hsv_exp.results --report study|lowres|pilot`) does around its own
tables: read the run dirs, name the command that regenerates it, write its files atomically and
remove the ones it no longer produces."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from hsv_exp.results.runs import Run, find_runs

Writer = Callable[[Path], None]


def read_runs(dirs: Iterable[Path], out: Path, report: str, extra: str = "") -> tuple[list[Run], Path, str]:
    """(every run under `dirs`, the `out` folder, created once there are runs, the command that writes this report)."""
    dirs = [Path(d) for d in dirs]
    runs = find_runs(dirs)  # fails on no runs, before anything is created
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    command = f"python -m hsv_exp.results {' '.join(map(str, dirs))} --out {out}" \
        + (f" --report {report}" if report != "study" else "") + extra
    return runs, out, command


def write_outputs(out: Path, outputs: dict[str, Writer | None]) -> list[Path]:
    """Write each output file (name -> writer); a None writer removes that file, as a stale one from an
    earlier aggregation of more runs would mislead. -> the paths written."""
    written = []
    for name, write in outputs.items():
        if write is not None:
            write(out / name)
            written.append(out / name)
        else:
            (out / name).unlink(missing_ok=True)
    return written
