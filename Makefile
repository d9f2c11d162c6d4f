# headwater: the two commands a fresh clone needs are `make demo` and `make test`.
# Everything else here is what those two call.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HEADWATER := $(BIN)/headwater
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit setup jars stack-up stack-down bench clean pathway-venv

## demo: set everything up (venv, deps, jars, stack) and run the main job
demo: setup
	$(HEADWATER) stack up
	$(HEADWATER) demo

## test: set everything up and run the whole suite against the real stack
## (the pytest session fixture starts the local stack unless one is running or named by env)
test: setup
	@$(BIN)/pytest tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; that is a failure" >&2; fi; \
	  exit $$rc

## test-unit: the broker-free tier only
test-unit: setup
	$(BIN)/pytest tests/unit

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/dev.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

## pathway-venv: Pathway, an opt-in benchmark peer, in its own venv (.venv-pathway): its
## dependencies conflict with ours (pyarrow<26); `headwater bench engine --engines ...,pathway` uses it
PATHWAY_VENV := .venv-pathway
pathway-venv: $(PATHWAY_VENV)/.installed

$(PATHWAY_VENV)/.installed: requirements/pathway.lock
	test -x $(PATHWAY_VENV)/bin/python || $(PYTHON) -m venv $(PATHWAY_VENV)
	$(PATHWAY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PATHWAY_VENV)/bin/pip install --quiet -r requirements/pathway.lock
	touch $@

stack-up: setup
	$(HEADWATER) stack up

stack-down: setup
	$(HEADWATER) stack down

clean: stack-down
	rm -rf $(VENV) .headwater
