# batcher: every target creates .venv and installs the project on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
CONFIG ?= $(if $(wildcard config.toml),config.toml,config.example.toml)
ARGS   ?=
# pytest workers: four on the 2-core CI machine; override with make test JOBS=1. The e2e tier's
# tests wait on their CLI processes and simulated latency, and the in-process tier on simulated
# pacing, so two workers left the cores a third idle (measured: 117 s wall at 134% CPU with 2,
# 88 s at 184% with 4). worksteal: a worker that runs out takes tests queued on another.
JOBS   ?= 4
FAST_JOBS ?= 3
# the tests keep compiled modules (pytest's rewritten tests too) even where
# PYTHONDONTWRITEBYTECODE is set: each worker and each CLI the e2e tests start would otherwise
# compile every module of batcher again (0.1 s a CLI start). The dependencies' were compiled by
# pip at install time, next to them, and are used as they are (a PYTHONPYCACHEPREFIX would
# ignore them and compile 43 MB again: a fresh clone's first `make test` took 67 s, now 59 s)
PYCACHE := PYTHONDONTWRITEBYTECODE=

.PHONY: help install run simulate test test-fast lint bench status report replay undo verify resolve clean

help:
	@echo "make run INPUT=file [CONFIG=file] [ARGS=\"--dry-run\"]   send the IDs in INPUT (simulator by default)"
	@echo "make test                                              run the test suite (both tiers)"
	@echo "make test-fast                                         the in-process tier only"
	@echo "make lint                                              ruff, mypy, the import contracts"
	@echo "make bench                                             long measurements (not part of make test)"
	@echo "make simulate [ARGS=\"--port 8765\"]                     run the Graph simulator in the foreground"
	@echo "make status LEDGER=file                                counts by state in a ledger"
	@echo "make replay LEDGER=file [ARGS=\"--only CODE\"]            send failed and unknown steps again"
	@echo "make report LEDGER=file OUT=report.csv                 one row per ID (.csv, .parquet, .json; .html: the page)"
	@echo "make undo LEDGER=file                                  reverse what LEDGER did (where it can be)"
	@echo "make verify LEDGER=file                                read back what LEDGER did, per user"
	@echo "make resolve INPUT=file [OUT=table.csv]                look users up in the directory only"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "batcher needs Python 3.11 or newer; run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# INPUT may be left out when ARGS names a source read from Graph (--incident, --risky, --signed-in-from)
run: $(STAMP)
	@if [ -z "$(INPUT)" ] && ! echo "$(ARGS)" | grep -Eq -- '--(incident|risky|signed-in-from)'; then echo "usage: make run INPUT=path/to/ids.csv [CONFIG=config.toml] [ARGS=\"--dry-run\"]  (or ARGS=\"--incident 42 --contain\" without INPUT)" >&2; exit 2; fi
	$(BIN)/batcher run $(if $(INPUT),"$(INPUT)") --config "$(CONFIG)" $(ARGS)

simulate: $(STAMP)
	$(BIN)/batcher simulate $(ARGS)

status: $(STAMP)
	@if [ -z "$(LEDGER)" ]; then echo "usage: make status LEDGER=path/to/ledger.sqlite" >&2; exit 2; fi
	$(BIN)/batcher status "$(LEDGER)"

replay: $(STAMP)
	@if [ -z "$(LEDGER)" ]; then echo "usage: make replay LEDGER=path/to/ledger.sqlite [CONFIG=config.toml] [ARGS=\"--only CODE\"]" >&2; exit 2; fi
	$(BIN)/batcher replay "$(LEDGER)" --config "$(CONFIG)" $(ARGS)

undo: $(STAMP)
	@if [ -z "$(LEDGER)" ]; then echo "usage: make undo LEDGER=path/to/ledger.sqlite [CONFIG=config.toml]" >&2; exit 2; fi
	$(BIN)/batcher undo "$(LEDGER)" --config "$(CONFIG)" $(ARGS)

verify: $(STAMP)
	@if [ -z "$(LEDGER)" ]; then echo "usage: make verify LEDGER=path/to/ledger.sqlite [CONFIG=config.toml]" >&2; exit 2; fi
	$(BIN)/batcher verify "$(LEDGER)" --config "$(CONFIG)" $(ARGS)

resolve: $(STAMP)
	@if [ -z "$(INPUT)" ]; then echo "usage: make resolve INPUT=path/to/list.csv [OUT=table.csv]" >&2; exit 2; fi
	$(BIN)/batcher resolve "$(INPUT)" --config "$(CONFIG)" $(if $(OUT),--out "$(OUT)") $(ARGS)

report: $(STAMP)
	@if [ -z "$(LEDGER)" ] || [ -z "$(OUT)" ]; then echo "usage: make report LEDGER=path/to/ledger.sqlite OUT=report.csv|.parquet|.json|.html" >&2; exit 2; fi
	$(BIN)/batcher report "$(LEDGER)" --out "$(OUT)"

test: $(STAMP)
	$(PYCACHE) $(BIN)/python -m pytest -n $(JOBS) --dist worksteal $(ARGS)

test-fast: $(STAMP)
	$(PYCACHE) $(BIN)/python -m pytest -n $(FAST_JOBS) --dist worksteal -m "not e2e" $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check batcher tests benchmarks
	$(BIN)/ruff format --check batcher tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

# the bench extra (the msgraph-sdk baseline) on top of the dev install
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
