# hsv_exp: every target sets itself up (creates .venv and installs pinned deps on first use).
PY      := .venv/bin/python
STAMP   := .venv/.installed
# The one default of GLUE_DIR: ../shared/glue where it exists, else empty (the hub). Everything else reads GLUE_DIR.
GLUE_DIR ?= $(if $(wildcard ../shared/glue),$(abspath ../shared/glue))
export GLUE_DIR

.PHONY: help install run test test-fast bench bench-score clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3.11 -m venv .venv || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package with pinned dependencies (idempotent)

run: $(STAMP)  ## a real RTE run: offline MiniLM, Houlsby adapters in the variability-selected window
	$(PY) -m hsv_exp task=rte tuning=adapter select=variability $(ARGS)

# One pytest-xdist worker per core, each taking whole test modules (tests/conftest.py). ARGS="-n 0": serial.
PYTEST  := HF_HUB_OFFLINE=1 WANDB_MODE=disabled $(PY) -m pytest -q -n auto

test: $(STAMP)  ## the whole offline test suite (what CI runs)
	$(PYTEST) $(ARGS)

test-fast: $(STAMP)  ## tests without the slow end-to-end and SLURM ones
	$(PYTEST) -m "not slow and not slurm" $(ARGS)

bench: $(STAMP)  ## speed/memory benchmark -> results/bench/bench_<device>.{md,csv,png} (ARGS=--quick: ~2 min)
	$(PY) -m benchmarks.bench $(ARGS)

bench-score: $(STAMP)  ## time-to-score vs the HF Trainer -> results/bench/score_<device>.{md,csv,png}
	$(PY) -m benchmarks.score $(ARGS)

clean:  ## remove run outputs (keeps .venv)
	rm -rf outputs multirun .pytest_cache
