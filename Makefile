# Two commands for a fresh machine: `make run` and `make test`.
# Every install step lives here so that CI on a clean clone does what a person does.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUF := node_modules/.bin/buf
PROTO := protos/auditpb/v1/audit.proto
GEN := clients/auditpb/v1/audit_pb2.py clients/auditpb/v1/audit_pb2.pyi clients/auditpb/v1/audit_pb2_grpc.py

.PHONY: setup venv tools proto lint typecheck test test-fast run cluster bench chaos load breaking clean

setup: $(STAMP) tools $(GEN)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml clients/pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ./clients -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian's prometheus gives promtool and the server the ops tests run; buf comes from npm.
tools: $(BUF)
	@command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

$(BUF): package.json
	npm install --silent --no-audit --no-fund
	touch $(BUF)

# Generated code is committed; this target is the only thing that writes it.
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=clients --pyi_out=clients --grpc_python_out=clients $(PROTO)

$(GEN): $(PROTO) | $(STAMP)
	$(MAKE) proto

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BUF) lint

breaking: setup
	$(BUF) breaking --against protos/released/auditpb-v1.binpb

typecheck: setup
	$(BIN)/mypy

# Two workers, one test file each at a time (a file's module-scoped database
# server stays in one worker), for all but the multi-replica fault tests: those
# run leases of about a second and then run alone, since a second worker's load
# can make such a lease lapse (a stray failover) on a 2-core machine.
# --tb=native: Python 3.11.7's ast.parse can raise SystemError while pytest
# formats a failure from a deep stack, which hid one and aborted a run.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/pytest -q -p no:cacheprovider --tb=native --durations=20

test: setup lint typecheck breaking
	$(PYTEST) -n $(TEST_WORKERS) --dist loadfile --ignore=tests/cluster --ignore=tests/chaos
	$(PYTEST) tests/cluster tests/chaos

test-fast: setup
	$(BIN)/pytest -q -m "not slow and not chaos"

run: setup
	$(PY) -m auditsvc dev

cluster: setup
	$(PY) -m auditsvc dev --replicas 3

bench: setup
	$(PY) -m bench

# The long fault-injection run and two minutes of sustained load (not in make test).
chaos: setup
	$(PY) -m tests.chaos --rounds 30
	$(PY) -m tests.chaos.load --seconds 120

clean:
	rm -rf $(VENV) node_modules .devdata
