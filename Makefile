# driftline: `make help` lists the targets. Everything runs from ./.venv (created on demand).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
UV_VERSION := 0.13.9

# Embedded default: state under ./data (SQLite source, curated Parquet, Airflow on SQLite).
export DRIFTLINE_HOME ?= $(CURDIR)/data
export AIRFLOW_HOME ?= $(DRIFTLINE_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export GX_ANALYTICS_ENABLED := False
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false

# A nightly run processes the New York day that ends at its logical date, so the run for
# day D is the one at midnight (America/New_York) after D. The demo runs three nights through
# Airflow, backfills the rest of January (+ the 7-day holdout) with the CLI (same functions,
# in-process), then trains the first champion through Airflow.
DEMO_DAYS := 2013-01-01 2013-01-02 2013-01-03
DEMO_TRAINING := {"window_end": "2013-01-31", "window_days": 31, "reason": "make demo"}
# Monitoring: the nights of 31 January .. 13 February in-process (the DAG's functions: each
# scores the next day ahead, then judges the stored predictions of the days whose labels are
# in), then 14 February through Airflow, where the drift sensor judges the rule and may
# trigger flights_training; that night publishes the predictions of 15 February.
DEMO_MONITOR_LAST := 2013-02-14
# The logical date `airflow dags test` takes to run the night of a day: the local midnight
# after it (UseCase.day_start of the next day, in flights.yaml's zone).
RUN_AT = $(BIN)/python -c "import datetime as dt, sys; from driftline.config import load_usecase; \
  print(load_usecase('flights').day_start(dt.date.fromisoformat(sys.argv[1]) + dt.timedelta(days=1)).isoformat())"

.PHONY: help install chromium demo up down test ui-test replay lint audit lock clean

# The demo and the replay are flights': their driftline commands mean it whatever else is in
# usecases/ (the CLI otherwise asks which use-case when there are several).
demo replay: export DRIFTLINE_USECASE := flights

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

# --compile-bytecode: machines that set PYTHONDONTWRITEBYTECODE (this one does) never cache
# .pyc files, so without it every process compiles every module it imports from source
# (measured: `import xgboost` 3.3 -> 1.1 CPU-s, `import pandas` 1.1 -> 0.4 CPU-s).
$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(UV) pip install --compile-bytecode --python $(BIN)/python -r requirements.txt -c constraints.txt
	$(UV) pip install --python $(BIN)/python --no-deps -e .
	touch $@

install: $(VENV)/.installed ## Create .venv with the pinned set (requirements.txt + constraints.txt)

# The browser test drives Debian's Chromium (Playwright's own browser download is not used).
CHROMIUM := /usr/bin/chromium
chromium: ## Install Debian's chromium for the browser test (needs root or an existing install)
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: install ## Seed the source DB, run the ETL, train a champion through Airflow, show the outputs
	$(BIN)/driftline seed
	$(BIN)/airflow db migrate > $(DRIFTLINE_HOME)/airflow-migrate.log 2>&1
	@for day in $(DEMO_DAYS); do \
	  run_at=$$($(RUN_AT) $$day); \
	  echo "== flights_etl for $$day (logical date $$run_at)"; \
	  $(BIN)/airflow dags test flights_etl $$run_at > $(DRIFTLINE_HOME)/demo-$$day.log 2>&1 \
	    || { tail -40 $(DRIFTLINE_HOME)/demo-$$day.log; exit 1; }; \
	done
	@echo "== driftline etl 2013-01-04 .. $(DEMO_MONITOR_LAST) (backfill without Airflow)"
	@$(BIN)/driftline etl --start 2013-01-04 --end $(DEMO_MONITOR_LAST) | tail -1
	@echo '== flights_training $(DEMO_TRAINING)'
	@$(BIN)/airflow dags test flights_training -c '$(DEMO_TRAINING)' \
	  > $(DRIFTLINE_HOME)/demo-training.log 2>&1 || { tail -40 $(DRIFTLINE_HOME)/demo-training.log; exit 1; }
	@echo "== driftline monitor 2013-01-31 .. 2013-02-13 (nightly monitoring without Airflow)"
	@$(BIN)/driftline monitor --start 2013-01-31 --end 2013-02-13 | tail -4
	@echo "== flights_monitoring for $(DEMO_MONITOR_LAST) (Airflow: score ahead, report, DriftSensor, trigger)"
	@run_at=$$($(RUN_AT) $(DEMO_MONITOR_LAST)); \
	  $(BIN)/airflow dags test flights_monitoring $$run_at > $(DRIFTLINE_HOME)/demo-monitoring.log 2>&1 \
	    || { tail -40 $(DRIFTLINE_HOME)/demo-monitoring.log; exit 1; }
	@$(BIN)/python -m driftline.operator.dags_test_runs  # their real durations in the DAG list
	@$(BIN)/driftline history --last 14
	@echo "== drift sensor on $(DEMO_MONITOR_LAST): \
	  $$(grep -q 'drift rule holds' $(DRIFTLINE_HOME)/demo-monitoring.log \
	     && echo 'FIRED: flights_training run drift__$(DEMO_MONITOR_LAST) was triggered (airflow dags list-runs flights_training)' \
	     || echo 'did not fire (see the decision above)')"
	@echo "   reports: $(DRIFTLINE_HOME)/reports/flights/<day>/drift.html; Evidently UI: $(BIN)/evidently ui --workspace $(DRIFTLINE_HOME)/evidently"
	$(BIN)/driftline status
	@echo "== the next day's predictions, published before its flights leave (driftline predictions)"
	@$(BIN)/driftline predictions --rows 3

up: install ## Start Airflow (4 processes), MLflow UI, Evidently UI, scoring server under supervisord
	$(BIN)/driftline stack up

down: install ## Shut the stack's supervisord down; nothing `make up` started is left behind
	$(BIN)/driftline stack down

# Three test files at a time on two cores (pytest-xdist; a file's tests stay together and in
# order, as its module fixtures need): an integration test also waits for stacks and
# subprocesses (measured on 2 cores, pytest's own time: 2 workers 27.2 min, 3 workers 22.6 min,
# 4 workers 26.2 min with the cores saturated and a request timing out). --no-loadscope-reorder
# keeps tests/conftest.py's slowest-first order (xdist would order files by their number of
# tests).
TEST_WORKERS ?= 3
test: install chromium ## Lint, then the whole test suite (unit, DAG integrity, integration, stack)
	$(BIN)/ruff check .
	$(BIN)/python -m compileall -q include plugins dags  # see --compile-bytecode above
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=20

ui-test: install chromium ## The browser test against the stack `make up` started (screenshots -> docs/)
	DRIFTLINE_STACK_HOME=$(DRIFTLINE_HOME) DRIFTLINE_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(BIN)/pytest -p no:cacheprovider tests/integration/test_operator_stack.py -k browser

# The year replay (docs/RESULTS.md): the curated store of 2013 is loaded first if it is not
# complete, then each policy replays 1 Feb .. 31 Dec in its own stores under data/replay
# (resumable: a rerun goes on after the last recorded night).
replay: install ## Replay Feb-Dec 2013 under the four retraining policies -> docs/replay/ (hours)
	$(BIN)/driftline seed
	@test "$$(ls -d $(DRIFTLINE_HOME)/curated/flights/date=2013-* 2>/dev/null | wc -l)" = 365 \
	  || $(BIN)/driftline etl --start 2013-01-01 --end 2013-12-31 | tail -1
	$(BIN)/driftline replay --policy all --start 2013-02-01 --split 2013-07-01  # docs/RESULTS.md's nights

# Benchmarks (bench/, docs/BENCHMARKS.md): each seeds its own source into a temporary
# DRIFTLINE_HOME and prints "figure | value | baseline | ratio". Not part of `make test`.
BENCHES := etl validation drift training airflow scheduler_load scale
BENCH_ARGS ?=
.PHONY: bench bench-quick

bench: install ## Run every benchmark in full (long: see docs/BENCHMARKS.md)
	@for b in $(BENCHES); do \
	  echo "== make bench: bench_$$b"; began=$$SECONDS; \
	  $(BIN)/python -m bench.bench_$$b $(BENCH_ARGS) || exit 1; \
	  echo "== bench_$$b took $$((SECONDS - began)) s"; \
	done

bench-quick: install ## Smoke-run every benchmark on a few days (checks they work; not figures)
	@for b in $(BENCHES); do \
	  echo "== make bench-quick: bench_$$b"; began=$$SECONDS; \
	  $(BIN)/python -m bench.bench_$$b --quick $(BENCH_ARGS) || exit 1; \
	  echo "== bench_$$b --quick took $$((SECONDS - began)) s"; \
	done

lint: install ## ruff (with the Airflow 3 AIR rules)
	$(BIN)/ruff check .

# pip-audit of the whole lock (requirements.txt's pins + every transitive one in constraints.txt)
# against PyPI's vulnerability feed: the per-release JSON API, https://pypi.org/pypi/NAME/VERSION/json
# (OSV is not reachable from our machines). The lock is pinned but not hashed, so --no-deps
# --disable-pip: nothing is resolved or installed, each pin is looked up as it is. --strict: a pin
# that cannot be looked up fails the audit (a skipped package is not a pass). Each vulnerability
# we accept is in .pip-audit-ignore with its reason; any other one fails the target.
# Not part of `make test`: this workplace's PyPI mirror answers 404 to every per-release JSON
# request, so the target fails here (by design: "could not audit" is never a pass).
AUDIT_IGNORES = $(shell sed -e 's/\#.*//' .pip-audit-ignore | awk 'NF {print "--ignore-vuln", $$1}')
audit: install ## pip-audit the lock against PyPI's vulnerability feed (accepted IDs: .pip-audit-ignore)
	@$(BIN)/python scripts/check_audit_feed.py
	$(BIN)/pip-audit --requirement requirements.txt --requirement constraints.txt --no-deps \
	  --disable-pip --strict --vulnerability-service pypi --progress-spinner off --desc on \
	  $(AUDIT_IGNORES)

lock: ## Re-resolve requirements.txt and rewrite the full lock in constraints.txt
	$(PYTHON) -m venv /tmp/driftline-lock && /tmp/driftline-lock/bin/pip install --quiet uv==$(UV_VERSION)
	/tmp/driftline-lock/bin/uv pip install --python /tmp/driftline-lock/bin/python -r requirements.txt
	{ echo "# Full transitive lock for requirements.txt on CPython 3.11 (generated by \`make lock\`; do not edit)."; \
	  /tmp/driftline-lock/bin/uv pip freeze --python /tmp/driftline-lock/bin/python | grep -viE '^(-e |uv==|driftline)'; } > constraints.txt
	rm -rf /tmp/driftline-lock

clean: ## Remove the state folder ./data (source DB, curated store, Airflow home)
	rm -rf data
