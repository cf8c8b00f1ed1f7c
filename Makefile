# Two commands do all the set-up on a fresh machine (Python 3.11, no GPU needed):
#   make repro   install, then run the whole pipeline (dvc repro) on the defaults
#   make test    install (with test tools), then run the whole test suite
#
# torch: TORCH pins the build. On a machine without CUDA, torch==2.13.0 resolves to the
# CPU wheel (pip's find-links on this kind of machine); elsewhere add the CPU index:
#   make repro TORCH_INDEX=https://download.pytorch.org/whl/cpu
# A GPU user picks a CUDA build the same way, e.g.
#   make repro TORCH_INDEX=https://download.pytorch.org/whl/cu128

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
PYTEST_ARGS ?=
# Test files run in parallel processes (pytest-xdist), one file per process at a time so a
# module's shared fixture is built once; auto = one process per CPU core.
TEST_WORKERS ?= auto

BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: setup test-setup repro test plots-template system-test-deps clean-state

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

setup: $(VENV)/.installed plots-template

# Self-contained vega/vega-lite/vega-embed template so `dvc plots show` renders offline.
plots-template: plots/offline.html
plots/offline.html: plots/package-lock.json plots/build_template.py
	bash scripts/setup_plots.sh

# Headless Chromium (browser tests) and PostgreSQL (distributed search test), from Debian.
system-test-deps:
	@command -v chromium >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium postgresql >/dev/null; }

repro: setup
	dvc repro

test: setup system-test-deps
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

clean-state:
	rm -rf .trainlab mlflow.db mlruns
