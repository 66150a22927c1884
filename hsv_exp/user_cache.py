"""The folder for what is computed once per machine and user: $HSV_EXP_CACHE, else ~/.cache/hsv_exp."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("HSV_EXP_CACHE") or Path.home() / ".cache" / "hsv_exp")
