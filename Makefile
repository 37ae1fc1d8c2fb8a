# vitalrisk: set-up, demo and tests on this machine, no Docker needed.
#   make demo          set up what is missing, stream a simulated cohort through Kafka -> Faust ->
#                      PostgreSQL/TimescaleDB, print a summary, stop what it started
#   make test          set up what is missing, then the whole suite; it starts and stops its own
#                      Kafka and PostgreSQL
#   make lint          ruff, mypy --strict, and the import contract: layers one way, no package
#                      cycle (lint-imports)
# Set-up apart, for those who want it (each step is idempotent and says what it did):
#   make system-deps   Debian packages (Java 17, Maven, PostgreSQL server and headers, cmake,
#                      Prometheus tools, docker-compose); installs only as root
#   make setup         system-deps, the virtual environment, the Kafka jars and TimescaleDB
#   make timescaledb   build TimescaleDB from ../shared/vendor when present and not installed

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_ARGS ?=

.PHONY: system-deps venv kafka-jars timescaledb setup demo test lint services-start services-stop services-status clean

system-deps:
	@bash infra/scripts/system-deps.sh

$(STAMP): pyproject.toml
	@echo "setup: creating the virtual environment in $(VENV) ..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)
	@echo "setup: virtual environment $(VENV) ready"

kafka-jars: $(STAMP)
	@$(BIN)/python -m infra.kafka

timescaledb:
	@bash infra/scripts/timescaledb.sh

setup: system-deps venv kafka-jars timescaledb

demo: setup
	$(BIN)/vitalrisk demo $(DEMO_ARGS)

test: setup
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy kernel stream models sinks simulators infra grafana
	$(BIN)/lint-imports

services-start: setup
	$(BIN)/vitalrisk infra start

services-stop: $(STAMP)
	$(BIN)/vitalrisk infra stop

services-status: $(STAMP)
	$(BIN)/vitalrisk infra status

clean:
	@if [ -x $(BIN)/vitalrisk ]; then $(BIN)/vitalrisk infra clean; fi
	rm -rf .local
