# ticket-fulfilment — the two commands a new machine needs: `make demo` and `make test`.
# Every target installs what is missing first (apt packages as root, the venv) and
# starts the local Postgres and RabbitMQ (scripts/services.sh) when it needs them.

SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help bootstrap services services-stop status lint test test-unit fuzz mutate chaos bench demo demo-stop migrate schema screenshots clean ha-up ha-down ha-status ha-demo chaos-ha

help:
	@echo "make demo        install, start servers, run sandbox + workers + scheduler, submit sample purchases"
	@echo "make test        install, start servers, run the whole test suite (unit, integration, e2e)"
	@echo "make test-unit   unit tests only (no servers needed);  make lint  ruff + mypy + import layers"
	@echo "make fuzz        the hypothesis tests with random, many more examples (FUZZ_EXAMPLES, default 1000)"
	@echo "make mutate      mutation testing of the money modules (mutmut, incremental; MUTATE_MAX_SECONDS caps it)"
	@echo "make chaos       1,000 purchases under kills, server restarts and partner faults; prints a table"
	@echo "make bench       throughput vs raw dramatiq and the floor, latency, scheduler cost, worker memory; prints a table"
	@echo "make services    start the local Postgres and RabbitMQ;  make services-stop  stops them"
	@echo "make ha-up       the HA stack: 3-node RabbitMQ cluster + Patroni pair with a synchronous standby (scripts/ha.sh)"
	@echo "make chaos-ha    kill a RabbitMQ node and the Postgres primary under load; async vs sync standby (tests/ha)"
	@echo "make ha-demo     the demo on the HA stack;  make ha-down  stops it"
	@echo "make schema      regenerate docs/schemas/purchase-request.schema.json"
	@echo "make screenshots regenerate the console screenshots in docs/screenshots/ (headless Chromium)"

bootstrap:
	@bash scripts/bootstrap.sh

services: bootstrap
	@bash scripts/services.sh start

services-stop:
	@bash scripts/services.sh stop

status:
	@bash scripts/services.sh status

lint: bootstrap
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

test: services lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: bootstrap
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# The hypothesis tests (pytest's `hypothesis` marker) with the "fuzz" profile (tests/conftest.py):
# random examples, FUZZ_EXAMPLES of them per test; `make test` runs them derandomized ("ci").
fuzz: services
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -m hypothesis --hypothesis-show-statistics --timeout=3600 $(PYTEST_ARGS)

# Mutation testing of the money modules (scripts/mutate.sh, README "Mutation testing"): the hand-made
# mutants, then mutmut's, incremental (mutants/ keeps every verdict), niced, capped by MUTATE_MAX_SECONDS.
mutate: services
	@bash scripts/mutate.sh

# Its own pair of servers (.local/chaos, other ports): it restarts them mid-run.
chaos: bootstrap
	$(PY) -m tests.chaos --purchases $${CHAOS_PURCHASES:-1000}

bench: services
	$(PY) -m bench $(BENCH_ARGS)

demo: services
	@bash scripts/demo.sh

demo-stop:
	@bash scripts/demo.sh stop

# The HA stack (README "Operations"): installs patroni and etcd when missing (as root), ports 31xxx.
ha-up: bootstrap
	@bash scripts/ha.sh up

ha-down:
	@bash scripts/ha.sh down

ha-status:
	@bash scripts/ha.sh status

ha-demo: ha-up
	@DEMO_SERVERS=scripts/ha.sh DEMO_SANDBOX_PORT=31980 DEMO_TM_SANDBOX_PORT=31981 dramatiq_prom_port=31982 \
	  METRICS_PORT=31983 bash scripts/demo.sh

# Kills nodes of the HA stack under load (tests/ha); the local servers serve the sandbox's tests' fixtures.
chaos-ha: services ha-up
	FULFIL_HA=1 $(PY) -m pytest tests/ha -s $(PYTEST_ARGS)

migrate: services
	@eval "$$(bash scripts/services.sh env)" && $(VENV)/bin/fulfil migrate

schema: bootstrap
	$(VENV)/bin/fulfil schema > docs/schemas/purchase-request.schema.json

screenshots: services
	$(PY) scripts/screenshots.py

clean: services-stop
	rm -rf .local
