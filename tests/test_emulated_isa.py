"""`make test-emulated` runs the suite as an older x86-64 CPU would: its switches take effect,
and the suite's float tolerances come from one place (tests/helpers/tolerance.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from helpers.emulated_isa import ISAS, MARKER, TORCH_CAPABILITY, environment, numpy_targets_above
from helpers.tolerance import EPS32, assert_close_fp32, cross_cpu_score_tolerance, ulp

LEVEL = os.environ.get(MARKER)
ONEDNN_ISA = {"sse42": "SSE4.1", "avx2": "AVX2"}   # how oneDNN's verbose line names the capped ISA


@pytest.mark.skipif(LEVEL is None, reason=f"only under `make test-emulated` ({MARKER} unset)")
def test_the_emulated_instruction_set_is_the_one_in_effect() -> None:
    assert torch.backends.cpu.get_cpu_capability() == TORCH_CAPABILITY[LEVEL]
    assert numpy_targets_above(LEVEL) == []          # numpy's wider loops are switched off
    probe = ("import torch; x = torch.randn(1, 3, 16); w = torch.randn(4, 3, 3)\n"
             "with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):\n"
             "    torch.ops.aten.mkldnn_convolution(x, w, None, [0], [1], [1], 1)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120).stdout
    isa = next((line for line in out.splitlines() if ",info,cpu,isa:" in line), "")
    assert isa.endswith(ONEDNN_ISA[LEVEL]), out[:2000]


@pytest.mark.parametrize("level", list(ISAS))
def test_the_environment_names_every_switch(level: str) -> None:
    env = environment(level)
    switches = {"ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "NPY_DISABLE_CPU_FEATURES"}
    assert switches <= set(env)
    assert all(" " not in value for value in env.values())       # one word each for `env`
    if LEVEL is None:   # natively, numpy lists its targets above the level that this CPU has
        assert set(numpy_targets_above(level)).isdisjoint(ISAS[level][1])


def test_ulp_is_the_spacing_of_the_dtype() -> None:
    assert ulp(torch.tensor([1.0])).item() == EPS32
    assert ulp(torch.tensor([-0.75])).item() == EPS32 / 2
    assert ulp(torch.tensor([1.0], dtype=torch.float64)).item() == torch.finfo(torch.float64).eps
    assert_close_fp32(1.0 + 2 * EPS32, 1.0, ulps=2)
    with pytest.raises(AssertionError, match="3.0 ulps"):
        assert_close_fp32(1.0 + 3 * EPS32, 1.0, ulps=2)


def test_cross_cpu_score_tolerance_is_3_samples_or_half_a_point() -> None:
    assert cross_cpu_score_tolerance(1000) == 0.005     # the MNIST-1D test split: 0.5 point
    assert cross_cpu_score_tolerance(600) == 0.005      # the two agree at 600 samples
    assert cross_cpu_score_tolerance(100) == 0.03       # a small split: 3 samples
    with pytest.raises(ValueError):
        cross_cpu_score_tolerance(0)
