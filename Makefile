# vitalrisk: set-up, demo and tests on this machine, no Docker needed.
#   make system-deps   Debian packages (Java 17, Maven, PostgreSQL server, docker-compose, Prometheus); needs root
#   make setup         local virtual environment + the Kafka jars from Maven Central
#   make demo          stream a simulated cohort through Kafka -> Faust -> PostgreSQL and print a summary
#   make test          the whole test suite; starts and stops its own Kafka and PostgreSQL

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEBIAN_PACKAGES := openjdk-17-jre-headless maven postgresql docker-compose prometheus prometheus-alertmanager

.PHONY: system-deps setup demo test services-start services-stop services-status clean

system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "system packages present"; fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)
	$(BIN)/python -c "from infra.kafka import LocalKafka; from stream.settings import Settings; LocalKafka(Settings())._classpath()"

demo: $(STAMP)
	$(BIN)/vitalrisk demo

test: $(STAMP)
	$(BIN)/pytest

services-start: $(STAMP)
	$(BIN)/vitalrisk infra start

services-stop: $(STAMP)
	$(BIN)/vitalrisk infra stop

services-status: $(STAMP)
	$(BIN)/vitalrisk infra status

clean: services-stop
	rm -rf .local
