# trackflow — `make help` lists the targets.
SHELL := /bin/bash
# The interpreter .venv is made with: Python 3.11. Debian 12's /usr/bin/python3.11 is an optimised (PGO + LTO),
# statically linked build; pyenv's default build is neither, and spends ~11% more CPU importing the stack
# (benchmarks/bench_interpreter.py), the whole suite ~15%. So SYSTEM_PYTHON when it can make a venv, else python3;
# `make PYTHON=... install` picks another.
SYSTEM_PYTHON ?= /usr/bin/python3.11
PYTHON ?= $(or $(shell $(SYSTEM_PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 && echo $(SYSTEM_PYTHON)),python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
MLFLOW_PORT ?=
PREFECT_PORT ?= 4200
# Telemetry off for the commands below that are not trackflow's own (trackflow/telemetry.py).
QUIET = env $$($(BIN)/python -m trackflow.telemetry)

export PYTHONUNBUFFERED ?= 1

.DEFAULT_GOAL := help
PREFECT_API ?= http://127.0.0.1:$(PREFECT_PORT)/api
POOL ?= trackflow-process

.PHONY: help system-deps install run test test-fast ui bench lock clean server worker deploy serve

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $(STAMP)

SYSTEM_PACKAGES := postgresql chromium chromium-driver
system-deps: ## Install the Debian packages the integration tests use (PostgreSQL, Chromium + ChromeDriver; sudo unless root)
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing:$$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

install: $(STAMP) ## Create .venv (if missing) and install the pinned dependency set

run: $(STAMP) ## Run the training pipeline on the defaults (MLflow store: mlruns/, Prefect: local server)
	$(BIN)/trackflow train

# Workers of pytest-xdist: most integration tests wait on servers and child processes, so two pay even on two cores.
TEST_WORKERS ?= 2
# No replacement for a crashed worker: pytest-xdist 3.8 hangs for good when it replaces one under --dist loadgroup
# (pytest-dev/pytest-xdist#1323, #1378). The crash fails that test, the worker's queued tests are not run, the run ends.
XDIST = -n $(TEST_WORKERS) --dist loadgroup --max-worker-restart 0
test: system-deps $(STAMP) ## Install what the tests need (Debian packages too), then run the whole suite (TEST_WORKERS=2)
	$(BIN)/python -m pytest $(XDIST)

test-fast: $(STAMP) ## Run the unit layer (no servers; ~1 min in one process)
	$(BIN)/python -m pytest tests/unit

ui: $(STAMP) ## MLflow UI on the project's store at http://127.0.0.1:5000, or MLFLOW_PORT (trackflow ui)
	$(BIN)/trackflow ui $(if $(MLFLOW_PORT),--port $(MLFLOW_PORT))

# The UI asks /ui-settings for the API's address, which Prefect builds from this port (default 4200).
server: export PREFECT_SERVER_API_PORT = $(PREFECT_PORT)
server: $(STAMP) ## Prefect server (API + UI) on http://127.0.0.1:4200, or PREFECT_PORT; its database is in ~/.prefect
	$(QUIET) $(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

# These talk to a running server: PREFECT_API_URL from the environment, else `make server`'s.
deploy worker serve: export PREFECT_API_URL ?= $(PREFECT_API)

deploy: $(STAMP) ## Create the process work pool and register prefect.yaml's deployments on the server
	$(QUIET) $(BIN)/prefect work-pool inspect $(POOL) >/dev/null 2>&1 || $(QUIET) $(BIN)/prefect work-pool create $(POOL) --type process
	$(QUIET) TRACKFLOW_HOME=$(CURDIR) $(BIN)/prefect --no-prompt deploy --all

worker: $(STAMP) ## A process worker for the pool (flow runs start in the clone `make deploy` ran in)
	$(QUIET) $(BIN)/prefect worker start --pool $(POOL) --type process

serve: $(STAMP) ## Serve prefect.yaml's deployments and schedules in one process (no worker needed)
	$(BIN)/trackflow serve

bench: $(STAMP) ## Run benchmarks/ and print each figure beside its peer
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lock: ## Re-resolve the dependency set and rewrite constraints.txt (commit the result)
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[test]'
	.lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^trackflow' > constraints.txt
	rm -rf .lock-venv

clean: ## Remove the virtual environment and caches (keeps mlruns/)
	rm -rf $(VENV) .pytest_cache build *.egg-info
