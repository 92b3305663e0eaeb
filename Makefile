# The two commands of the README are `make demo` and `make test`; the rest are their parts.
SHELL := /bin/bash
VENV ?= .venv
KB := $(VENV)/bin/kb-platform
CORPUS ?= ../shared/corpus
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: setup up down status demo test test-kernels lint format

setup:
	bash deploy/local/setup.sh

up: setup
	$(KB) services up
	$(KB) topics

# Stops what `up` started (the scripts need no virtualenv, so this works whatever state setup is in).
down:
	for s in dagster encoder elasticsearch kafka postgres; do bash deploy/local/$$s/$$s.sh down; done

status:
	$(KB) services status

# Everything on a fresh machine: install, start the stack and the Dagster UI, ingest the sample corpus.
demo: up
	$(KB) ingest $(CORPUS)/documents --in-process

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The whole suite against the real services (started here, left running for the next run), then
# the numerics-sensitive tests once more under another CPU kernel set than this machine's own.
test: setup lint
	$(KB) services up postgres kafka elasticsearch
	$(VENV)/bin/pytest -ra --durations=25
	$(MAKE) test-kernels

# The `numerics` tests (models, training, retrieval, serving) under a second kernel set
# (kb_platform_tests/kernel_sets.py): a test that holds only with one CPU's kernels fails here.
test-kernels:
	$(KB) services up postgres kafka elasticsearch
	$(VENV)/bin/python -m kb_platform_tests.kernel_sets -m numerics -ra
