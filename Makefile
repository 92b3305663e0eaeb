# The two commands of the README are `make demo` and `make test`; the rest are their parts.
SHELL := /bin/bash
VENV ?= .venv
KB := $(VENV)/bin/kb-platform
CORPUS ?= ../shared/corpus
DEMO_DOCUMENTS ?= $(CORPUS)/documents
DEMO_QUESTION ?= How is corrosion on aircraft detected and treated?
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: setup up down status demo test test-kernels lint format

setup:
	bash deploy/local/setup.sh

up: setup
	$(KB) services up
	$(KB) topics

# Stops what `up` started (the scripts need no virtualenv, so this works whatever state setup is in).
down:
	for s in rag dagster encoder elasticsearch kafka postgres; do bash deploy/local/$$s/$$s.sh down; done

status:
	$(KB) services status

# Everything on a fresh machine: install; start the servers, the encoder service and Dagster
# (webserver + daemon, runs embedding through the encoder service); produce the sample corpus to
# Kafka and follow the sensors' progress until every message is settled; then the audit, the
# RAG service, and one /search and one /ask through it.
demo: setup
	$(KB) services up postgres kafka elasticsearch encoder
	$(KB) topics
	KB_ENCODER_URL=http://127.0.0.1:$${KB_ENCODER_PORT:-3020} KB_ENCODER_TOKEN="$$(cat .kb-local/encoder/token)" \
	  $(KB) services up dagster
	$(KB) produce $(DEMO_DOCUMENTS) --follow
	$(KB) audit
	$(KB) services up rag
	$(KB) ask "$(DEMO_QUESTION)"

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
