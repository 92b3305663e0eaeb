# The two commands of the README are `make demo` and `make test`; the rest are their parts.
SHELL := /bin/bash
VENV ?= .venv
KB := $(VENV)/bin/kb-platform
CORPUS ?= ../shared/corpus
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: setup up down status demo test lint format

setup:
	bash deploy/local/setup.sh

up: setup
	$(KB) services up
	$(KB) topics

# Stops what `up` started (the scripts need no virtualenv, so this works whatever state setup is in).
down:
	for s in dagster elasticsearch kafka postgres; do bash deploy/local/$$s/$$s.sh down; done

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

# The whole suite against the real services (started here, left running for the next run).
test: setup lint
	$(KB) services up postgres kafka elasticsearch
	$(VENV)/bin/pytest -ra
