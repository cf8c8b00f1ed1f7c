#!/usr/bin/env bash
# The whole GPU check, one command, on a machine with one CUDA GPU (about 10 minutes at most):
#   1. tests/test_gpu.py (pytest -m gpu): AMP vs fp32, fp16 overflow, CUDA resume, NCCL, device data
#   2. bench/gpu.py: samples/s, peak memory and accuracy of fp32 / bf16 / fp16 / bf16+compile
# Without CUDA both end as a clean skip and the script exits 0.
#
#   scripts/gpu_check.sh [RESULTS_DIR]     # default: ./gpu-check-<date>; the bench table lands there
#
# What the node needs: Python 3.10+ with torch (CUDA build), numpy, pydantic and pytest. Not
# MLflow, DVC, Optuna, Click or PyYAML: src/ is put on PYTHONPATH, nothing is installed.
# A node without network that lacks pydantic or pytest gets them as wheels carried over:
#   on a machine with network, the same Python version and platform as the node:
#     pip download --dest wheels/ "pydantic>=2" pytest
#   copy wheels/ along with the checkout, then on the node:
#     pip install --no-index --find-links wheels/ pydantic pytest
# (torch itself is best taken from the node's own environment; its CUDA build must match the driver.)
set -euo pipefail

cd "$(dirname "$0")/.."
# The project's .venv where there is one (make setup), else the node's python3; PYTHON=... overrides.
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
OUT_DIR=${1:-gpu-check-$(date -u +%Y%m%d-%H%M)}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: skipped, no CUDA device on $(hostname) (torch $("$PYTHON" -c 'import torch; print(torch.__version__)'))"
    # Still run both, to show they skip cleanly here rather than fail.
    "$PYTHON" -m pytest -q -m gpu tests/test_gpu.py
    "$PYTHON" bench/gpu.py
    exit 0
fi

mkdir -p "$OUT_DIR"
"$PYTHON" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'gpu_check: {p.name}, torch {torch.__version__}, CUDA {torch.version.cuda}')"
# Budgets: the tests take about a minute on one GPU, the bench about five; `timeout` keeps the
# whole check inside ten minutes even if something hangs (an NCCL rendezvous, a compile).
status=0
timeout 180 "$PYTHON" -m pytest -q -m gpu tests/test_gpu.py 2>&1 | tee "$OUT_DIR/tests.txt" || status=1
timeout 400 "$PYTHON" bench/gpu.py --out "$OUT_DIR/bench_gpu.md" 2>&1 | tee "$OUT_DIR/bench_log.txt" || status=1
echo "gpu_check: results in $OUT_DIR/ (copy bench_gpu.md into bench/RESULTS.md, GPU section); exit $status"
exit $status
