# facetrace: `make demo` and `make test` do all the set-up on a fresh machine (Python 3.11).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
FACES ?= $(abspath ../shared/faces)

.PHONY: demo test lint install system-deps bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,demo]'
	touch $@

install: $(VENV)/.installed

demo: install
	FACETRACE_FACES=$(FACES) $(BIN)/facetrace --data .demo-data demo

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# Debian packages the tests need (PostgreSQL server, Chromium): only the missing ones.
system-deps:
	scripts/system-deps.sh

test: system-deps lint
	FACETRACE_FACES=$(FACES) $(BIN)/pytest

# Benchmarks install their peers (face_recognition without its dlib source build).
$(VENV)/.bench: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/pip install --quiet --no-deps face-recognition==1.3.0
	touch $@

bench: $(VENV)/.bench
	FACETRACE_FACES=$(FACES) $(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(VENV) .demo-data build *.egg-info
