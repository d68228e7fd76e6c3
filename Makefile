# trader — every target installs what it needs into .venv first (created if missing).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_STORE ?= .store/demo

.PHONY: install test lint bench demo clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## test: the whole suite (the README's test command; .ci/run calls it)
test: $(STAMP)
	$(PY) -m pytest

## lint: ruff on everything, mypy on trader/
lint: $(STAMP)
	$(VENV)/bin/ruff check trader cli tests bench
	$(VENV)/bin/mypy trader

## bench: benchmarks (not tests): replay server throughput, warm, scan
bench: $(STAMP)
	$(PY) bench/replay_rps.py
	$(PY) bench/warm.py

## demo: replay exchange on a free port -> warm the bundled symbols -> scan
demo: $(STAMP)
	$(PY) bench/demo.py --store $(DEMO_STORE)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .store
