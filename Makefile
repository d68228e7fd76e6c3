# trader — every target installs what it needs into .venv first (created if missing).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_STORE ?= .store/demo

TUNE_STORE ?= .store/tune
PAPER_DIR ?= .store/paper
MODEL_STORE ?= .store/model

.PHONY: install test test-fast lint bench demo tune-demo paper-demo model clean
.ONESHELL:
SHELL := /bin/bash

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --upgrade --target $(VENV)/clients/connector 'binance-connector>=3.9'
	@touch $(STAMP)

install: $(STAMP)

## test: the whole suite on 2 workers (the README's test command; .ci/run calls it)
test: $(STAMP)
	$(PY) -m pytest -n 2

## test-fast: the inner loop — everything but the tests marked slow (crash cycles, subprocess sessions, searches)
test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -m "not slow"

## lint: ruff on everything, mypy (strict) on trader/ and cli/
lint: $(STAMP)
	$(VENV)/bin/ruff check trader cli tests bench
	$(VENV)/bin/mypy trader cli

## bench: benchmarks (not tests): replay server throughput, warm, scan
bench: $(STAMP)
	$(PY) bench/replay_rps.py
	$(PY) bench/warm.py
	$(PY) bench/scan.py
	$(PY) bench/calibrate.py
	$(PY) bench/live.py
	$(PY) bench/ml.py
	$(PY) bench/orders.py
	$(PY) bench/venue.py
	$(PY) bench/futures.py
	$(PY) bench/portfolio.py
	$(PY) bench/trade.py
	$(VENV)/bin/trader compare --full

## demo: replay exchange on a free port, at the end of the recording (after the shipped model's training labels:
## its signals there are out of sample) -> warm the 96 bundled symbols -> scan --min-score 75 -> stop
demo: $(STAMP)
	set -euo pipefail
	rm -rf $(DEMO_STORE)
	coproc REPLAY { exec $(VENV)/bin/trader replay --port 0 --speed 1 --start end; }
	trap 'kill $$REPLAY_PID 2>/dev/null; wait $$REPLAY_PID 2>/dev/null || true' EXIT
	read -r URL <&"$${REPLAY[0]}"
	echo "== replay exchange serving real Binance klines at $$URL"
	echo "== trader warm --top 96 (1h and 4h, 1000 klines each, into $(DEMO_STORE))"
	$(VENV)/bin/trader warm --top 96 --rest-url "$$URL" --store $(DEMO_STORE)
	echo "== trader scan --min-score 75 (the shipped model's signal: 75 = its top or bottom decile of the universe)"
	$(VENV)/bin/trader scan --min-score 75 --store $(DEMO_STORE) || [ $$? -eq 1 ]

## tune-demo: the whole recorded history through the replay (--start end) -> tune evaluate -> tune train -> scan with the model
tune-demo: $(STAMP)
	set -euo pipefail
	rm -rf $(TUNE_STORE)
	coproc REPLAY { exec $(VENV)/bin/trader replay --port 0 --speed 0 --start end; }
	trap 'kill $$REPLAY_PID 2>/dev/null; wait $$REPLAY_PID 2>/dev/null || true' EXIT
	read -r URL <&"$${REPLAY[0]}"
	echo "== trader warm --top 96 --klines 8000 (the whole recorded history, 1h and 4h, into $(TUNE_STORE))"
	$(VENV)/bin/trader warm --top 96 --klines 8000 --rest-url "$$URL" --store $(TUNE_STORE)
	echo "== trader tune evaluate --horizon 24h (the default score, its factors and the baselines, out of sample)"
	$(VENV)/bin/trader tune evaluate --horizon 24h --store $(TUNE_STORE)
	echo "== trader tune train (walk-forward XGBoost -> ONNX; active only if its out-of-sample checks pass)"
	$(VENV)/bin/trader tune train --store $(TUNE_STORE) || [ $$? -eq 1 ]
	echo "== trader scan --min-score 75 (with the model's ml factor when it is active)"
	$(VENV)/bin/trader scan --min-score 75 --store $(TUNE_STORE) || [ $$? -eq 1 ]

## model: the model the package ships (trader/data/model): the whole bundled history through the replay ->
## walk-forward training with config/model.yaml (fixed seed, 2 XGBoost threads) -> shipped if its checks pass
model: $(STAMP)
	set -euo pipefail
	rm -rf $(MODEL_STORE)
	coproc REPLAY { exec $(VENV)/bin/trader replay --port 0 --speed 0 --start end; }
	trap 'kill $$REPLAY_PID 2>/dev/null; wait $$REPLAY_PID 2>/dev/null || true' EXIT
	read -r URL <&"$${REPLAY[0]}"
	$(VENV)/bin/trader warm --top 96 --klines 8000 --rest-url "$$URL" --store $(MODEL_STORE)
	$(VENV)/bin/trader tune train --store $(MODEL_STORE) --config config/model.yaml --ship

## paper-demo: replay exchange at 10 replayed minutes per second -> warm 20 symbols -> trader trade (paper) for 6 decisions -> history
paper-demo: $(STAMP)
	set -euo pipefail
	rm -rf $(PAPER_DIR)
	mkdir -p $(PAPER_DIR)
	coproc REPLAY { exec $(VENV)/bin/trader replay --port 0 --speed 600; }
	trap 'kill $$REPLAY_PID 2>/dev/null; wait $$REPLAY_PID 2>/dev/null || true' EXIT
	read -r URL <&"$${REPLAY[0]}"
	read -r CREDS <&"$${REPLAY[0]}"
	export $$CREDS TRADER_REST_URL="$$URL" TRADER_WS_URL="$${URL/http/ws}" TRADER_STORE=$(PAPER_DIR)/store
	echo "== replay exchange at $$URL (its account's key and secret exported from its second line)"
	$(VENV)/bin/trader warm --top 20
	echo "== trader trade --steps 6 --no-model (paper: orders on the replay venue, protective OCOs, the 2 h time stop;"
	echo "   the hand-made score: the shipped model trained on these klines, its signals here would be in-sample)"
	$(VENV)/bin/trader trade --steps 6 --no-model --ledger $(PAPER_DIR)/ledger.sqlite
	$(VENV)/bin/trader trade --ledger $(PAPER_DIR)/ledger.sqlite history
	$(VENV)/bin/trader trade --ledger $(PAPER_DIR)/ledger.sqlite status

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .store
