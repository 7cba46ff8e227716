# mspn-cli developer tasks. `make demo` and `make test` each set up what they need.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
MSPN := $(VENV)/bin/mspn
SHARED ?= ../shared
DEMO_IMAGE ?= $(SHARED)/data/images/pilots_three_people_rgba.png

# MegEngine 1.13 ships wheels for CPython <= 3.10 only. Find a 3.10 interpreter:
# $PYTHON if set, else pyenv's 3.10.x, else python3.10 on PATH.
PYTHON ?= $(shell \
	if command -v pyenv >/dev/null 2>&1 && p=$$(pyenv root 2>/dev/null)/versions/$$(cat .python-version 2>/dev/null)/bin/python && [ -x "$$p" ]; then echo "$$p"; \
	elif command -v pyenv >/dev/null 2>&1 && p=$$(ls -d $$(pyenv root)/versions/3.10.*/bin/python 2>/dev/null | tail -n1) && [ -n "$$p" ]; then echo "$$p"; \
	elif command -v python3.10 >/dev/null 2>&1; then command -v python3.10; fi)

.PHONY: help setup demo test test-all bench bench-smoke clean check-python

help:
	@echo "make setup   - create $(VENV) (Python 3.10) and install mspn-cli with dev extras"
	@echo "make demo    - set up, then run 'mspn keypoints' on a real image (official weights, fetched on first use)"
	@echo "make test    - set up, then run the test suite"
	@echo "make bench   - set up, then run the speed benchmark (benchmarks/bench.py)"

check-python:
	@if [ -z "$(PYTHON)" ]; then \
		echo "error: Python 3.10 not found. MegEngine 1.13 needs CPython <= 3.10." >&2; \
		echo "       Install it (e.g. 'pyenv install 3.10.13') or run 'make setup PYTHON=/path/to/python3.10'." >&2; \
		exit 1; fi
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 10), sys.version' 2>/dev/null || { \
		echo "error: $(PYTHON) is not Python 3.10 (MegEngine 1.13 needs CPython <= 3.10)." >&2; exit 1; }

$(VENV)/.installed: pyproject.toml | check-python
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

setup: check-python $(VENV)/.installed

demo: setup
	$(MSPN) keypoints $(DEMO_IMAGE) -o demo_out/vis_skeleton.jpg --json demo_out/keypoints.json

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

bench: setup
	$(PY) benchmarks/bench.py

bench-smoke: setup
	$(PY) benchmarks/bench.py --smoke

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache demo_out
