"""Float tolerances stated from the dtype, and the one cross-CPU tolerance for test scores.

Which kernels run decides the last bits of a float result: torch picks them by the CPU's
instruction set (ATen's capability, MKL, oneDNN), numpy by its own dispatch, and the order
of a sum changes with the SIMD width. The same computation rerun on the same machine is
bit-identical, so exact equality stays where that is the point (resume after a kill, rerun
of a run, byte-identical outputs). Two code paths (clipped vs unclipped, accumulated vs one
batch, AMP vs fp32, two ranks vs one) agree only to some units in the last place (ulps) of
the values involved, on every CPU differently; a test states how many, and why, at the
comparison, with these helpers. `make test-emulated` runs the suite under older
instruction sets to show the bounds hold off this machine's kernels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

EPS32 = torch.finfo(torch.float32).eps   # 2**-23 = 1.19e-7: the gap between 1.0 and the next fp32


def ulp(t: torch.Tensor) -> torch.Tensor:
    """The spacing of t's dtype at each element of t: one unit in the last place."""
    a = t.detach().abs()
    return torch.nextafter(a, torch.full_like(a, math.inf)) - a


def largest(tensors: Mapping[str, torch.Tensor] | torch.Tensor) -> float:
    """The largest magnitude in a tensor or in a state dict's tensors."""
    if isinstance(tensors, torch.Tensor):
        return tensors.detach().abs().max().item()
    return max(t.detach().abs().max().item() for t in tensors.values())


def fp32_atol(scale: float, ulps: float) -> float:
    """`ulps` units in the last place of an fp32 value of magnitude `scale` (an upper bound:
    the spacing at x is at most EPS32 * |x|)."""
    return ulps * EPS32 * scale


def assert_close_fp32(got, expected, ulps: float, scale: float | None = None, msg: str = "") -> None:
    """got == expected within `ulps` fp32 ulps of `scale` (default: expected's largest magnitude),
    absolute; tensors, state dicts or floats. The failure message gives the gap in those ulps."""
    if scale is None:
        scale = largest(expected) if not isinstance(expected, float) else abs(expected)
    atol = fp32_atol(scale, ulps)
    if isinstance(expected, float):
        gap = abs(got - expected)
    elif isinstance(expected, torch.Tensor):
        gap = (got.double() - expected.double()).abs().max().item()
    else:
        gap = max((got[k].double() - expected[k].double()).abs().max().item() for k in expected)
    assert gap <= atol, (f"{msg}: " if msg else "") + (
        f"off by {gap:.3g} = {gap / (EPS32 * scale):.1f} ulps of {scale:.3g} (allowed {ulps} ulps = {atol:.3g})")


# --------------------------------------------------------------------------- test scores
# The one cross-CPU tolerance for final test scores (3 test samples or 0.5 point) is the
# project's own contract, so it lives in trainlab.results_check (`trainlab check-results`,
# docs/reproducibility.md, "Results on another CPU"); tests use that definition, not a copy.
from trainlab.results_check import accuracy_tolerance as cross_cpu_score_tolerance  # noqa: E402

