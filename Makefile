# driftwatch: `make demo` and `make test` do all the set-up on a fresh machine (Python >= 3.11; uv optional).
#   make demo [FROM=2013-01-01 TO=2013-03-31 DATASET=flights] [AIRFLOW_PORT=8280 MLFLOW_PORT=5050]
#   make help   lists every target

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

VENV    := .venv
BIN     := $(VENV)/bin
PY      := $(BIN)/python
STAMP   := $(VENV)/.driftwatch-installed
PYTHON  ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
PY_VERSION := 3.11

FROM    ?= 2013-01-01
TO      ?= 2013-03-31
DATASET ?= flights
SERVE_PORT ?= 5080
SERVE_WORKERS ?= 1
BENCH_FROM ?= 2013-01-01
BENCH_TO   ?= 2013-12-31
PYTEST_ARGS ?=
TEST_WORKERS ?= 2

# ports of the local stack: passed on only when given, so the defaults live in one place (devstack/config.py)
STACK_ENV :=
ifdef AIRFLOW_PORT
STACK_ENV += DRIFTWATCH_AIRFLOW_PORT=$(AIRFLOW_PORT)
endif
ifdef MLFLOW_PORT
STACK_ENV += DRIFTWATCH_MLFLOW_PORT=$(MLFLOW_PORT)
endif
STACK := $(STACK_ENV) $(PY) -m devstack

.PHONY: help venv demo up down backfill prepare serve test test-unit e2e lint format lock clean bench bench-pipeline \
	bench-tune bench-monitors bench-serving bench-shadow bench-defaults bench-tasks

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(STAMP) ## create .venv and install the locked requirements (re-runs when requirements.txt/pyproject.toml change)

# uv when it is on PATH; otherwise a plain venv that gets uv from PyPI. Bytecode is compiled at install
# (PYTHONDONTWRITEBYTECODE may be set): importing evidently takes ~8 s compiled, ~18 s not.
$(STAMP): requirements.txt pyproject.toml
	@if command -v uv >/dev/null 2>&1; then uv=uv; \
	  [ -x $(PY) ] || uv venv --python $(PY_VERSION) $(VENV); \
	else \
	  [ -x $(PY) ] || $(PYTHON) -m venv $(VENV); \
	  [ -x $(BIN)/uv ] || $(PY) -m pip install --quiet --disable-pip-version-check uv; \
	  uv=$(BIN)/uv; \
	fi; \
	echo "Installing requirements.txt into $(VENV) with $$uv ..."; \
	$$uv pip install --python $(PY) --compile-bytecode -r requirements.txt; \
	$$uv pip install --python $(PY) --compile-bytecode --no-deps -e .
	@touch $@

demo: venv ## prepare the data, start Airflow + MLflow, backfill FROM..TO and print a summary (services keep running)
	$(STACK) demo --from $(FROM) --to $(TO) --dataset $(DATASET)

up: venv ## start Airflow + MLflow in the background and print the URLs and the admin password
	$(STACK) up

down: ## stop every process `make up`/`make demo` started
	@if [ -x $(PY) ]; then $(STACK) down; else echo "no $(VENV): nothing to stop"; fi

backfill: venv ## backfill FROM..TO on the (started if needed) stack: make backfill FROM=2013-04-01 TO=2013-04-30
	$(STACK) backfill --from $(FROM) --to $(TO) --dataset $(DATASET)

prepare: venv ## write the daily partitions of DATASET into the lake
	$(BIN)/driftwatch prepare $(DATASET)

serve: venv ## the model server of DATASET on 127.0.0.1:SERVE_PORT (5080), following its champion on the stack's MLflow; Ctrl-C stops it
	$(STACK) serve --dataset $(DATASET) --port $(SERVE_PORT) --workers $(SERVE_WORKERS)

test: venv ## unit, integration (real Airflow + MLflow on free ports) and browser tests on TEST_WORKERS processes (tests/scheduling.py); JUnit XML + screenshots in test-artifacts/
	@mkdir -p test-artifacts
	@rc=0; $(PY) -m pytest -p no:cacheprovider tests/unit tests/integration tests/e2e \
	  -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder \
	  --junitxml=test-artifacts/junit.xml $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; failing" >&2; exit 1; fi; \
	exit $$rc

test-unit: venv ## the fast unit tests (no service, no model training, under 2 minutes); make test runs every test
	$(PY) -m pytest -p no:cacheprovider tests/unit -m "not slow" -n auto $(PYTEST_ARGS)

e2e: venv ## only the browser tests (Debian's chromium, headless); screenshots in test-artifacts/e2e/
	$(PY) -m pytest -p no:cacheprovider tests/e2e $(PYTEST_ARGS)

bench-pipeline: venv ## scheduler-driven backfill on a throwaway stack, where each day's time goes (BENCH_FROM/BENCH_TO: the year)
	$(PY) scripts/bench_pipeline.py --from $(BENCH_FROM) --to $(BENCH_TO) $(BENCH_ARGS)

bench: venv ## replay flights 2013 under each policy + synthetic drift streams, then the same year under Airflow, then the monitors (~2 h, 2 cores); rewrites docs/benchmarks.md and docs/replay_auc.png
	$(BIN)/driftwatch prepare flights
	$(PY) scripts/bench_replay.py $(REPLAY_ARGS)
	$(PY) scripts/bench_monitors.py --same-day $(MONITOR_ARGS)
	$(PY) scripts/bench_tasks.py

bench-tasks: venv ## the regression and multiclass flights datasets under drift / every-7 / never (~45 min for the year); docs/benchmarks.md
	$(PY) scripts/bench_tasks.py $(TASKS_ARGS)

bench-monitors: venv ## bias/attribution drift and CBPE estimates on the demo range, labels on time and a week late (~10 min); docs/benchmarks.md
	$(BIN)/driftwatch prepare flights
	$(PY) scripts/bench_monitors.py $(MONITOR_ARGS)

bench-serving: venv ## driftwatch serve vs mlflow models serve on loopback: latency, throughput, alias moves, capture after SIGTERM/kill -9 (~5 min); docs/benchmarks.md
	$(PY) scripts/bench_serving.py $(SERVING_ARGS)

bench-shadow: venv ## the model server with and without a challenger in shadow, alternately: latency, CPU, shadow capture (~4 min); docs/benchmarks.md
	$(PY) scripts/bench_shadow.py --doc $(SHADOW_ARGS)

bench-defaults: venv ## generated streams of 50-5,000 rows a day with the defaults only: quarantines, false alarms, detection (~30 min); docs/benchmarks.md
	$(PY) scripts/bench_defaults.py

bench-tune: venv ## pick the drift thresholds on Jan-Apr 2013 only (~15 min); docs/bench_tuning.json, used by `make bench`
	$(BIN)/driftwatch prepare flights
	$(PY) scripts/bench_replay.py --tune $(REPLAY_ARGS)

lint: venv ## ruff (lint + format check) on ml, devstack, dags, plugins, tests, scripts; mypy on ml and devstack
	$(BIN)/ruff check ml devstack dags plugins tests scripts
	$(BIN)/ruff format --check ml devstack dags plugins tests scripts
	$(BIN)/mypy

format: venv ## ruff format (and the fixable lint rules) on ml, devstack, dags, plugins, tests, scripts
	$(BIN)/ruff check --fix ml devstack dags plugins tests scripts
	$(BIN)/ruff format ml devstack dags plugins tests scripts

lock: venv ## re-resolve requirements.in into requirements.txt (Python 3.11)
	@if command -v uv >/dev/null 2>&1; then uv=uv; else uv=$(BIN)/uv; fi; \
	$$uv pip compile --python-version 3.11 requirements.in -o requirements.txt

clean: ## remove var/ (all local state: Airflow DB, MLflow store, lake) when the stack is stopped
	@if [ -x $(PY) ] && [ -n "$$($(PY) -c 'from devstack import config, processes; print(*processes.running(config.StackConfig.from_env()))')" ]; then \
	  echo "the stack is running: run 'make down' first" >&2; exit 1; \
	fi
	rm -rf var
