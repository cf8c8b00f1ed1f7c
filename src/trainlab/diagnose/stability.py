"""Stability rules: divergence of the loss and vanishing/exploding gradient norms."""

from __future__ import annotations

import re

import numpy as np

from .curves import (
    GRAD_NORM,
    STAGE,
    LOSS_SCALE,
    STEP_LOSS,
    STEP_LR,
    TRAIN_LOSS,
    CurveDict,
    Series,
    binned,
    epoch_lr,
    fmt,
    fmt_lr,
    head,
    lr_change,
    moving_median,
    peak_lr,
    series,
    tail,
    train_loss,
    value_at,
)
from .findings import Finding

# A train loss that ends above 3x its own (smoothed) minimum and above where it started has blown
# up: batch noise and a late lr bump move a smoothed loss by tens of percent, never threefold.
DIVERGE_END_OVER_MIN = 3.0

# Input-side / output-side median layer grad norm. Healthy small CNNs sit within ~1-2 orders of
# magnitude (layers differ in size); three orders means the signal dies or blows up with depth.
GRAD_RATIO_VANISH = 1e-3
GRAD_RATIO_EXPLODE = 1e3
# Global grad_norm growing by three orders of magnitude from the start to the end of the run;
# healthy runs drift by a factor of a few as the loss landscape sharpens.
GRAD_GROWTH_EXPLODE = 1e3
# Fraction of the run taken as "start"/"end" when comparing global grad norms.
GRAD_WINDOW = 0.1

LAYER_KEY = re.compile(r"^grad_norm/(\d+)_(.+)$")

# What fixes a vanishing gradient in these models (measured on MNIST-1D, 12 blocks, 2 short
# epochs, median stem/head gradient ratio): a sigmoid cnn1d without batch norm has ~1e-11, with
# batch norm ~5e-2; its residual twin (resnet1d, pre-activation blocks: the skip path is a bare
# sum) ~8e-3 without batch norm. With relu and no batch norm: cnn1d ~5e-7, resnet1d ~0.26.
GRAD_SUGGESTION = (
    "turn on batch norm (`model.batchnorm: true`), use a non-saturating `model.activation` "
    "(relu or gelu instead of sigmoid/tanh), or a residual `model.arch` (resnet1d or resnet2d: its "
    "skip connections carry the gradient past every block), or lower `model.depth`"
)


def diverged(curves: CurveDict, num_classes: int | None = None) -> Finding | None:
    """Non-finite train loss, or a train loss that ends far above its minimum and its start."""
    return _non_finite_loss(curves) or _blown_up_loss(curves)


def _lr_at(curves: CurveDict, s: Series, step: int) -> float | None:
    if s.name != STEP_LOSS:  # per-epoch loss: epoch/lr, or the per-step lr resampled to epochs
        lr_epochs = epoch_lr(curves, np.array([step]))
        return float(lr_epochs[0]) if lr_epochs is not None else None
    lr = series(curves, STEP_LR)
    return value_at(lr, step) if lr is not None else None


def _non_finite_loss(curves: CurveDict) -> Finding | None:
    for name in (STEP_LOSS, TRAIN_LOSS):  # per-step first: it pins the blow-up most precisely
        s = series(curves, name, finite=False)
        if s is None or np.isfinite(s.values).all():
            continue
        i = int(np.argmax(~np.isfinite(s.values)))
        step, lr = s.number(i), _lr_at(curves, s, int(s.steps[i]))
        finite_before = s.values[:i][np.isfinite(s.values[:i])]
        last = f"; last finite value {fmt(finite_before[-1])}" if len(finite_before) else ""
        bad = ~np.isfinite(s.values)
        recovered = bool(np.isfinite(s.values[-1]))  # fp16 overflow steps can recover
        evidence = (
            f"{name} became {s.values[i]} at {s.unit} {step} (lr {fmt_lr(lr)} there){last}; "
            f"{int(bad.sum())} of {len(bad)} logged values are non-finite"
            + (" though the loss recovered later." if recovered else ".")
        )
        scale = series(curves, LOSS_SCALE)
        if scale is not None:
            evidence += f" loss_scale fell to {fmt(float(scale.values.min()))} (fp16)."
        data = {
            "first_nonfinite_step": step,
            "unit": s.unit,
            "metric": name,
            "lr_at_divergence": lr,
            "n_nonfinite": int(bad.sum()),
            "recovered": recovered,
        }
        return Finding("diverged", evidence, _diverged_suggestion(peak_lr(curves)), data)
    return None


def _blown_up_loss(curves: CurveDict) -> Finding | None:
    s = train_loss(curves, prefer_steps=False)
    if s is None or len(s) < 4:
        return None
    s = binned(s, 100)
    smooth = moving_median(s.values, 3)
    start, end = head(s.values), tail(s.values)
    i_min = int(np.argmin(smooth))
    low = float(smooth[i_min])
    if not (end > DIVERGE_END_OVER_MIN * low and end > start):
        return None
    step_min, lr = s.number(i_min), peak_lr(curves)
    # epoch means average the blow-up in: the first logged step shows where training began
    steps = series(curves, STEP_LOSS) if s.name != STEP_LOSS else None
    began = f"; {STEP_LOSS} began at {fmt(steps.values[0])}" if steps is not None else ""
    evidence = (
        f"{s.name} fell to {fmt(low)} at {s.unit} {step_min} and then climbed to {fmt(end)} by "
        f"{s.unit} {s.number(-1)}, {fmt(end / max(low, 1e-12))}x its minimum and above its "
        f"start ({fmt(start)}){began} (lr {fmt_lr(lr)})."
    )
    data = {"min_loss": low, "min_step": step_min, "final_loss": end, "start_loss": start, "lr": lr}
    return Finding("diverged", evidence, _diverged_suggestion(lr), data)


def _diverged_suggestion(lr: float | None) -> str:
    return (
        f"lower `{STAGE}.optimizer.lr` ~10x{lr_change(lr, 0.1)}, warm it up "
        f"(`{STAGE}.schedule.warmup_epochs: 1`) and set `trainer.clip_grad_norm: 1.0`; under fp16 "
        "keep `trainer.fp16_loss_scaling: true` or use `trainer.precision: bf16` (or fp32), and "
        "check the inputs for NaN/extreme values."
    )


def _layer_medians(curves: CurveDict) -> list[tuple[int, str, float]]:
    layers = []
    for name in curves:
        match = LAYER_KEY.match(name)
        s = series(curves, name) if match else None
        # An exactly zero norm is a layer with no signal at all: dead ReLUs after a too-high lr
        # (sgd lr 50 zeroes a resnet1d's backbone gradients within ~25 steps). That is the lr's
        # doing, not a gradient shrinking with depth, which stays positive however small.
        alive = s.values[s.values > 0] if s is not None else ()
        if match and len(alive):
            layers.append((int(match.group(1)), name, float(np.median(alive))))
    return sorted(layers)


def _depth_ratio(curves: CurveDict) -> tuple[float, tuple[str, float], tuple[str, float]] | None:
    """first/last layer median grad norm, with the two layers; None with < 2 layers."""
    layers = _layer_medians(curves)
    if len(layers) < 2:
        return None
    (_, first_name, first), (_, last_name, last) = layers[0], layers[-1]
    if last <= 0:
        ratio = np.inf if first > 0 else np.nan
    else:
        ratio = first / last
    return float(ratio), (first_name, first), (last_name, last)


def _ratio_evidence(ratio: float, first: tuple[str, float], last: tuple[str, float]) -> str:
    return (
        f"median {first[0]} = {first[1]:.2g} vs {last[0]} = {last[1]:.2g}: the input-side layer "
        f"gets {ratio:.2g}x the output-side gradient."
    )


def vanishing_gradients(curves: CurveDict, num_classes: int | None = None) -> Finding | None:
    """Input-side layer gradient norm orders of magnitude below the output-side layer's."""
    depth = _depth_ratio(curves)
    if depth is None or not depth[0] < GRAD_RATIO_VANISH:
        return None
    ratio, first, last = depth
    data = {
        "ratio_first_last": ratio,
        "first_layer": first[0],
        "last_layer": last[0],
        "first_median": first[1],
        "last_median": last[1],
    }
    return Finding(
        "vanishing_gradients", _ratio_evidence(ratio, first, last), GRAD_SUGGESTION + ".", data
    )


def _grad_growth(curves: CurveDict) -> tuple[float, float, float, Series] | None:
    s = series(curves, GRAD_NORM)  # non-finite norms are skipped: fp16 overflow steps are normal
    if s is None or len(s) < 10:
        return None
    early, late = head(s.values, GRAD_WINDOW), tail(s.values, GRAD_WINDOW)
    if early <= 0:
        return None
    return late / early, early, late, s


def exploding_gradients(curves: CurveDict, num_classes: int | None = None) -> Finding | None:
    """Input-side grad norm orders of magnitude above the output side, or global norm blowing up."""
    depth, growth = _depth_ratio(curves), _grad_growth(curves)
    parts, data = [], {}
    if depth is not None and depth[0] > GRAD_RATIO_EXPLODE:
        ratio, first, last = depth
        parts.append(_ratio_evidence(ratio, first, last))
        data.update(ratio_first_last=ratio, first_layer=first[0], last_layer=last[0])
    if growth is not None and growth[0] > GRAD_GROWTH_EXPLODE:
        factor, early, late, s = growth
        parts.append(
            f"global grad_norm grew {factor:.2g}x, from {early:.2g} early in the run to {late:.2g} "
            f"by step {int(s.steps[-1])}."
        )
        data.update(growth=factor, early_grad_norm=early, late_grad_norm=late)
    if not parts:
        return None
    suggestion = (
        f"set `trainer.clip_grad_norm: 1.0` and lower `{STAGE}.optimizer.lr`"
        f"{lr_change(peak_lr(curves), 0.1)}; batch norm (`model.batchnorm: true`) and a residual "
        "`model.arch` (resnet1d or resnet2d) keep the per-layer gradients balanced."
    )
    return Finding("exploding_gradients", " ".join(parts), suggestion, data)
