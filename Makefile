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
	for s in monitoring rag redis dagster encoder elasticsearch kafka postgres; do bash deploy/local/$$s/$$s.sh down; done

status:
	$(KB) services status

# Everything on a fresh machine: install; start the servers, then the encoder service and Dagster
# (webserver + daemon, runs embedding through the encoder service) side by side; produce the
# sample corpus to Kafka and follow the sensors' progress until every message is settled, while
# the RAG service warms up in the background (its log: .kb-local/rag/up.log); then the audit and
# one /search and one /ask through the RAG service.
demo: setup
	$(KB) services up postgres kafka elasticsearch
	$(KB) services install encoder
	$(KB) services up encoder & encoder=$$!; \
	  KB_ENCODER_URL=http://127.0.0.1:$${KB_ENCODER_PORT:-3020} KB_ENCODER_TOKEN="$$(cat .kb-local/encoder/token)" \
	    $(KB) services up dagster & dagster=$$!; \
	  $(KB) topics; topics=$$?; wait $$encoder; encoder=$$?; wait $$dagster; dagster=$$?; \
	  (( topics == 0 && encoder == 0 && dagster == 0 ))
	mkdir -p .kb-local/rag
	$(KB) services up rag >.kb-local/rag/up.log 2>&1 & rag=$$!; \
	  $(KB) produce $(DEMO_DOCUMENTS) --follow && $(KB) audit || { kill $$rag; exit 1; }; \
	  echo "waiting for the RAG service (log: .kb-local/rag/up.log)"; \
	  wait $$rag && tail -1 .kb-local/rag/up.log || { tail -20 .kb-local/rag/up.log; exit 1; }
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
