"""The environment under which this machine's libraries pick an older x86-64 CPU's kernels.

`python tests/helpers/emulated_isa.py sse42` prints it as `NAME=value` words for `env`
(`make test-emulated` runs the fast tests under each level in EMULATED_ISAS). What each
switch changes:

- ATEN_CPU_CAPABILITY: torch's own vectorised kernels (elementwise maths, reductions,
  softmax and losses, the optimizers' foreach/fused steps, clipping): `default` is their
  build without AVX, `avx2` the AVX2 build; natively torch takes the widest the CPU has.
- MKL_ENABLE_INSTRUCTIONS: MKL's BLAS/LAPACK code path (torch's matmuls and linear layers).
  MKL honours it on Intel CPUs only; on AMD it keeps its own path (an AMD EPYC gave the same
  bits for every value, 2026-12-06), so there the emulation leaves matmuls native.
- ONEDNN_MAX_CPU_ISA: the highest instruction set oneDNN's JIT kernels may use
  (convolutions, bf16 matmuls).
- NPY_DISABLE_CPU_FEATURES: numpy's SIMD loops above its baseline (x86-64-v2 for numpy
  2.4). The names differ between numpy versions and naming a baseline feature is an error,
  so the list is read from the running numpy: every target it dispatches to on this CPU
  above the level.

Not covered: OpenBLAS (numpy's matmul and linalg, scipy, scikit-learn) follows
OPENBLAS_CORETYPE, which these machines set in their own environment; another vendor's
library dispatch; another architecture.
"""

from __future__ import annotations

import sys

# Per level: torch/MKL/oneDNN settings, and the numpy targets at or below it.
_SSE42_NUMPY = {"SSE", "SSE2", "SSE3", "SSSE3", "SSE41", "POPCNT", "SSE42", "X86_V2"}
ISAS: dict[str, tuple[dict[str, str], set[str]]] = {
    "sse42": ({"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
              _SSE42_NUMPY),
    "avx2": ({"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
             _SSE42_NUMPY | {"AVX", "F16C", "FMA3", "AVX2", "X86_V3"}),
}
TORCH_CAPABILITY = {"sse42": "DEFAULT", "avx2": "AVX2"}   # what torch.backends.cpu reports under each
MARKER = "TRAINLAB_EMULATED_ISA"   # set by the make target: tests/test_emulated_isa.py checks the switches took


def numpy_targets_above(level: str) -> list[str]:
    """numpy's dispatch targets that this CPU has and that lie above `level`."""
    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:   # numpy 1.x
        from numpy.core import _multiarray_umath as umath
    allowed = ISAS[level][1]
    return [t for t in umath.__cpu_dispatch__ if umath.__cpu_features__.get(t) and t not in allowed]


def environment(level: str) -> dict[str, str]:
    """The variables for `level`, numpy's list comma-separated (no spaces: one word for env)."""
    return {**ISAS[level][0], "NPY_DISABLE_CPU_FEATURES": ",".join(numpy_targets_above(level)), MARKER: level}


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ISAS:
        sys.exit(f"usage: python {sys.argv[0]} {{{','.join(ISAS)}}}")
    print(" ".join(f"{k}={v}" for k, v in environment(sys.argv[1]).items()))
