# stbias — `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint format bench clean figures

help:  ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install torch and stbias (editable); quick when done

run: install  ## the embedded default probe (no downloads)
	$(PY) run.py

test: install  ## every test, slow ones too, as CI runs them (pytest's exit 5, no test collected, is not a failure)
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

test-fast: install  ## the tests not marked slow (minutes each): for development; CI runs them all
	$(PY) -m pytest -q -m "not slow"

# the Python of the tree: the folders and files of this list that exist
LINT_PATHS = $(wildcard stbias tests benchmarks run.py)

lint: install  ## ruff check and format check (CI runs it before the tests)
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)

format: install  ## ruff fix and format
	$(PY) -m ruff check --fix $(LINT_PATHS)
	$(PY) -m ruff format $(LINT_PATHS)

bench: install  ## the benchmarks in benchmarks/
	for f in benchmarks/[!_]*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

# Paper figures (python -m stbias.figures; the registry is stbias/figures/__init__.py):
#   make figures                 every figure target and what it needs
#   make fig3                    real data and weights, paths from figures.local.yaml or PATHS=
#   make fig3-embedded           the same pipeline on shipped data with tiny or reduced models
# Variables: PATHS="key=/path ..." (one path each; a path may hold spaces and quotes),
# PATHS_FILE=<yaml> (default figures.local.yaml), FIGURES_OUT=<folder> (default outputs/figures),
# ARGS="<overrides for every run>", FORCE=1 (run finished multiruns again, e.g. after a code
# change). The paths reach python through the environment, never through a shell command line.
ifdef PATHS
export STBIAS_FIGURE_SETS = $(PATHS)
endif
ifdef PATHS_FILE
export STBIAS_FIGURE_PATHS = $(PATHS_FILE)
endif
ifdef FIGURES_OUT
export STBIAS_FIGURES_OUT = $(FIGURES_OUT)
endif
FIGURE_FLAGS = $(if $(FORCE),--force)

figures: install  ## list the paper figures (make <name>, make <name>-embedded) and what each needs
	$(PY) -m stbias.figures $(FIGURE_FLAGS)

# any other target name is a figure of the registry (an unknown name lists the valid ones)
.DEFAULT:
	@$(MAKE) --no-print-directory install
	$(PY) -m stbias.figures $@ $(FIGURE_FLAGS) $(ARGS)

clean:  ## remove caches and outputs (keeps .venv)
	rm -rf outputs .pytest_cache .ruff_cache wandb
