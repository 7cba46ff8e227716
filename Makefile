# mspn-cli developer tasks. `make demo` and `make test` each set up what they need.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
MSPN := $(VENV)/bin/mspn
# The demo photo: the seed's own example photo, on the host the weights come from, fetched
# once into the cache beside the weights; the photo shipped in tests/data when it cannot be
# fetched. DEMO_IMAGE=path uses that photo instead.
DEMO_PHOTO_URL ?= https://data.megengine.org.cn/images/cat.jpg
DEMO_FALLBACK ?= tests/data/images/pilots_three_people_rgba.png
DEMO_IMAGE ?=
DEMO_OUT ?= demo_out

# Python: 3.10 when there is one (the full reference world: MegEngine 1.13 ships wheels for
# CPython <= 3.10 only), else the newest python3.X >= 3.10 on PATH (everything but MegEngine's
# features). $PYTHON if set; else pyenv's 3.10.x, python3.10, python3.13, 3.12, 3.11, python3.
PYTHON ?= $(shell \
	if command -v pyenv >/dev/null 2>&1 && p=$$(pyenv root 2>/dev/null)/versions/$$(cat .python-version 2>/dev/null)/bin/python && [ -x "$$p" ]; then echo "$$p"; \
	elif command -v pyenv >/dev/null 2>&1 && p=$$(ls -d $$(pyenv root)/versions/3.10.*/bin/python 2>/dev/null | tail -n1) && [ -n "$$p" ]; then echo "$$p"; \
	else for c in python3.10 python3.13 python3.12 python3.11 python3; do \
		if command -v $$c >/dev/null 2>&1 && $$c -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] < (4, 0))' 2>/dev/null; then command -v $$c; break; fi; \
	done; fi)

.PHONY: help setup demo test test-fast test-all bench bench-smoke clean check-python

help:
	@echo "make setup   - create $(VENV) (Python 3.10 if found, else the newest python3 >= 3.10) and install mspn-cli with dev extras"
	@echo "make demo    - set up, then run 'mspn keypoints' on the example photo (photo and official weights fetched on first use)"
	@echo "make test    - set up, then run the whole test suite (what CI runs)"
	@echo "make test-fast - the suite without tests/slow"
	@echo "make bench   - set up, then run the speed benchmark (benchmarks/bench.py)"

check-python:
	@if [ -z "$(PYTHON)" ]; then \
		echo "error: no Python 3.10 or newer found (looked for python3.10, python3.13, python3.12, python3.11, python3)." >&2; \
		echo "       Install one (Debian/Ubuntu: sudo apt install python3 python3-venv) or run 'make setup PYTHON=/path/to/python3'." >&2; \
		exit 1; fi
	@$(PYTHON) -c 'import sys; assert (3, 10) <= sys.version_info[:2], sys.version' 2>/dev/null || { \
		echo "error: $(PYTHON) is older than Python 3.10; mspn-cli needs 3.10 to 3.13." >&2; exit 1; }
	@v=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	if [ "$$v" = "3.10" ]; then echo "using Python $$v ($(PYTHON)): the full reference world, with MegEngine 1.13"; \
	else echo "using Python $$v ($(PYTHON)) (no MegEngine: the reference backend, mge-lite, .mge export, GPU and the parity tests are not available; they need Python 3.10)"; fi
	@test -x $(PY) || $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
		echo "error: $(PYTHON) cannot create a virtual environment (no venv/ensurepip module)." >&2; \
		echo "       Debian/Ubuntu: sudo apt install python3-venv (or python$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv)" >&2; exit 1; }

$(VENV)/.installed: pyproject.toml | check-python
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

setup: check-python $(VENV)/.installed

# Prints the path of the demo photo; a failed fetch says why on stderr and prints the fallback.
# Written to a temporary name in the cache folder and renamed, so a half download never stays.
define DEMO_PHOTO_PY
import os, sys, tempfile, urllib.request
from mspn_cli.weights.store import mspn_home
url, fallback = sys.argv[1], sys.argv[2]
target = mspn_home() / "demo" / url.rsplit("/", 1)[-1]
if not target.is_file():
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=10) as response:
            data = response.read()
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix="." + target.name + ".")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except Exception as exc:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        print(f"demo: cannot fetch {url} ({exc}); using {fallback}", file=sys.stderr)
        print(fallback)
        sys.exit(0)
print(target)
endef
export DEMO_PHOTO_PY

demo: setup
	@mkdir -p $(DEMO_OUT)
	@photo="$(DEMO_IMAGE)"; \
	if [ -z "$$photo" ]; then photo=$$($(PY) -c "$$DEMO_PHOTO_PY" "$(DEMO_PHOTO_URL)" "$(DEMO_FALLBACK)") || exit 1; fi; \
	echo "$(MSPN) keypoints $$photo -o $(DEMO_OUT)/vis_skeleton.jpg --json $(DEMO_OUT)/keypoints.json --overwrite"; \
	$(MSPN) keypoints "$$photo" -o $(DEMO_OUT)/vis_skeleton.jpg --json $(DEMO_OUT)/keypoints.json --overwrite

# The whole suite, tests/slow included: CI runs this (.ci/run). The 20 slowest tests are listed.
# One pytest-xdist worker per usable CPU, each pinned to its own (tests/conftest.py); PYTEST_WORKERS=0
# runs it in one process.
PYTEST_WORKERS ?= auto
test: setup
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --durations=20

# Everything but tests/slow (full-size networks end to end, fuzzing, memory): a quick check.
test-fast: setup
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -m "not slow"

test-all: test

bench: setup
	$(PY) benchmarks/bench.py

bench-smoke: setup
	$(PY) benchmarks/bench.py --smoke

clean:
	rm -rf $(VENV) .venv-py312 .venv-torch .torch-tests.log .ci_cross_world build dist src/*.egg-info .pytest_cache demo_out
