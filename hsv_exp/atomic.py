"""Atomic writes: a reader (or a resumed run) never sees a half-written result or checkpoint."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterable


def write_atomic(path: Path, write: Callable[[IO], None], binary: bool = False) -> None:
    """Write through a temporary file in the same folder, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": "", "encoding": "utf-8"})) as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: dict) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(payload, indent=2, default=float) + "\n"))


def write_text(path: Path, text: str) -> None:
    """A text file ending in one newline, written atomically."""
    write_atomic(path, lambda f: f.write(text if text.endswith("\n") else text + "\n"))


def write_figure(path: Path, figure) -> None:
    """A matplotlib Figure as a 130-dpi PNG, written atomically."""
    write_atomic(path, lambda f: figure.savefig(f, format="png", dpi=130), binary=True)


def write_csv(path: Path, rows: Iterable[dict], columns: list[str] | None = None) -> None:
    """Rows as CSV, atomically: `columns` in order (default: every key, first seen first); missing or None = empty."""
    rows = list(rows)
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))

    def write(f: IO) -> None:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)

    write_atomic(path, write)
