# Two commands do all the set-up on a fresh machine (Python 3.11, no GPU needed):
#   make repro   install, then run the whole pipeline (dvc repro) on the defaults
#   make test    install (with test tools), then run the whole test suite
#   make test-emulated   the fast tests again, as older x86-64 CPUs run them (CI runs both)
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
# The torchvision made for TORCH (only `make setup-timm` installs it: timm imports it).
TORCHVISION ?= torchvision==0.28.0
PYTEST_ARGS ?=
# Test files run in parallel processes (pytest-xdist), one file per process at a time so a
# module's shared fixture is built once; auto = one process per CPU core.
TEST_WORKERS ?= auto

BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: setup setup-timm test-setup repro test test-emulated plots-template system-test-deps clean-state

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

setup: $(VENV)/.installed plots-template

# Optional: timm, for `trainlab fetch-weights timm:<name>`. torchvision comes from the same index
# as torch and both stay pinned: a free resolve pulls PyPI's CUDA torchvision, which fails to
# import beside a CPU torch (operator torchvision::nms does not exist), or a newer CUDA torch.
# A CPU machine without that index: make setup-timm TORCH_INDEX=https://download.pytorch.org/whl/cpu
setup-timm: setup
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH)" "$(TORCHVISION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[timm]" "$(TORCH)" "$(TORCHVISION)"

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

# The fast tests (-m "not slow") once per instruction set in EMULATED_ISAS, as an older x86-64
# CPU would run them: the last bits of a float result depend on the kernels that run, so a
# tolerance that holds only for this CPU's kernels can fail here too (issue 31). Each level sets
# ATEN_CPU_CAPABILITY (torch's vectorised kernels), MKL_ENABLE_INSTRUCTIONS (MKL's matmuls;
# Intel CPUs only, MKL ignores it on AMD), ONEDNN_MAX_CPU_ISA (oneDNN's convolutions) and
# NPY_DISABLE_CPU_FEATURES (numpy's SIMD loops); tests/helpers/emulated_isa.py says what each
# changes and what is not covered (OpenBLAS, which follows the machine's OPENBLAS_CORETYPE).
# sse42: SSE4.2-era kernels everywhere; avx2: the AVX2 kernels of a CPU without AVX-512.
EMULATED_ISAS ?= sse42 avx2

test-emulated: setup
	@for isa in $(EMULATED_ISAS); do \
	  vars=$$($(BIN)/python tests/helpers/emulated_isa.py $$isa) || exit 1; \
	  echo "== fast tests as a CPU with $$isa runs them: $$vars"; \
	  env $$vars $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow" $(PYTEST_ARGS) || exit 1; \
	done

clean-state:
	rm -rf .trainlab mlflow.db mlruns
