"""Library output a user of hsv_exp does not need to read: transformers' load reports and progress bars."""

from __future__ import annotations

import transformers


def quiet_libraries() -> None:
    """Only transformers' errors are logged, and no progress bars are drawn (runs and the benchmark)."""
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
