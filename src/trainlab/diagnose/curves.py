"""Curve input handling: alias canonicalisation plus robust numpy helpers shared by the rules."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Curves = Mapping[str, Sequence[tuple[int, float]]]
CurveDict = dict[str, list[tuple[int, float]]]

# Canonical names logged by the trainlab engine (see trainlab.engine).
TRAIN_LOSS = "epoch/train_loss"
TRAIN_ACC = "epoch/train_acc"
VAL_LOSS = "val/loss"
VAL_ACC = "val/acc"
EPOCH_LR = "epoch/lr"
STEP_LOSS = "train/loss"
STEP_LR = "lr"
GRAD_NORM = "grad_norm"
LOSS_SCALE = "loss_scale"

# Names other tools (Keras, Lightning, HF Trainer, hand-rolled loops) use for the same curves.
# Order matters: the first alias present wins, so the most specific names come first.
ALIASES: dict[str, tuple[str, ...]] = {
    TRAIN_LOSS: ("train_loss", "training_loss", "train_loss_epoch", "loss"),
    VAL_LOSS: ("val_loss", "validation_loss", "valid_loss", "val_loss_epoch", "eval_loss"),
    TRAIN_ACC: ("train_acc", "train_accuracy", "training_accuracy", "accuracy", "acc"),
    VAL_ACC: (
        "val_acc",
        "val_accuracy",
        "validation_accuracy",
        "valid_acc",
        "eval_accuracy",
        "eval_acc",
    ),
    STEP_LR: ("learning_rate",),
}


def canonicalize(curves: Curves) -> CurveDict:
    """Copy `curves` with step-sorted float points and foreign names mapped to canonical ones."""
    out = {str(name): _clean(points) for name, points in curves.items()}
    for canonical, aliases in ALIASES.items():
        if canonical in out:  # the engine's own name always wins over an alias
            continue
        for alias in aliases:
            if alias in out:
                out[canonical] = out.pop(alias)
                break
    return out


def _clean(points: Iterable[Any]) -> list[tuple[int, float]]:
    by_step: dict[int, float] = {}
    for point in points:
        # also accept mlflow.entities.Metric objects, not just (step, value) tuples
        step, value = (point.step, point.value) if hasattr(point, "value") else point
        # last write wins: resumed runs re-log the same step
        by_step[int(step)] = math.nan if value is None else float(value)
    return sorted(by_step.items())


@dataclass(frozen=True)
class Series:
    """One metric as parallel numpy arrays of steps and values."""

    name: str
    steps: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.values)

    @property
    def unit(self) -> str:
        """'epoch' for per-epoch metrics, 'step' for per-optimizer-step ones."""
        return "step" if self.name in (STEP_LOSS, STEP_LR, GRAD_NORM, LOSS_SCALE) else "epoch"

    def number(self, i: int) -> int:
        """The step or epoch at index i as the terminal, DVC's curves and MLflow count them:
        optimizer steps from 0 as logged, epochs from 1 (the curves here count them from 0)."""
        return int(self.steps[i]) + (1 if self.unit == "epoch" else 0)


def series(curves: CurveDict, name: str, *, finite: bool = True) -> Series | None:
    """The named metric (finite points only unless finite=False), or None when absent/empty."""
    points = curves.get(name)
    if not points:
        return None
    arr = np.asarray(points, dtype=float).reshape(-1, 2)
    steps, values = arr[:, 0].astype(int), arr[:, 1]
    if finite:
        keep = np.isfinite(values)
        steps, values = steps[keep], values[keep]
    return Series(name, steps, values) if len(values) else None


def first_series(curves: CurveDict, names: Sequence[str], min_len: int = 1) -> Series | None:
    """The first of `names` that has at least `min_len` finite points."""
    for name in names:
        s = series(curves, name)
        if s is not None and len(s) >= min_len:
            return s
    return None


def accuracy(curves: CurveDict, name: str) -> Series | None:
    """An accuracy series scaled to [0, 1] (other tools sometimes log percentages)."""
    s = series(curves, name)
    if s is not None and np.nanmax(s.values) > 1.5:
        return Series(s.name, s.steps, s.values / 100.0)
    return s


def binned(s: Series, max_points: int = 100) -> Series:
    """Downsample a long per-step series to <= max_points chunk medians (robust to batch noise)."""
    if len(s) <= max_points:
        return s
    chunks = np.array_split(np.arange(len(s)), max_points)
    steps = np.array([int(np.median(s.steps[c])) for c in chunks])
    values = np.array([np.median(s.values[c]) for c in chunks])
    return Series(s.name, steps, values)


def moving_median(y: np.ndarray, width: int) -> np.ndarray:
    """Centred running median with edge padding; identity on monotone sequences for width 3."""
    if len(y) < width or width < 2:
        return np.asarray(y, dtype=float)
    half = width // 2
    padded = np.pad(np.asarray(y, dtype=float), (half, width - 1 - half), mode="edge")
    return np.median(sliding_window_view(padded, width), axis=1)


def moving_mean(y: np.ndarray, width: int) -> np.ndarray:
    """Centred running mean whose window shrinks at the edges (no padding bias at the ends)."""
    y = np.asarray(y, dtype=float)
    half = width // 2
    csum = np.concatenate([[0.0], np.cumsum(y)])
    idx = np.arange(len(y))
    lo, hi = np.maximum(idx - half, 0), np.minimum(idx + half + 1, len(y))
    return (csum[hi] - csum[lo]) / (hi - lo)


def _count(n: int, frac: float) -> int:
    return max(1, min(n, int(round(frac * n))))


def tail_span(s: Series, frac: float = 0.1) -> str:
    """What `tail(s.values, frac)` takes the median of, in words: 'the last 4 epochs', 'the last epoch'."""
    n = _count(len(s), frac)
    return f"the last {s.unit}" if n == 1 else f"the last {n} {s.unit}s"


def quoted_loss(s: Series) -> str:
    """Which loss a finding quotes: the epoch lines print the last epoch's mean train loss over
    its batches (weights still changing, dropout on) and val loss from an evaluation pass."""
    if s.name == TRAIN_LOSS:
        return "train loss (mean over each epoch's batches)"
    if s.name == STEP_LOSS:
        return "train loss (per optimizer step)"
    return "val loss (evaluation pass after each epoch)" if s.name == VAL_LOSS else s.name


def head(y: np.ndarray, frac: float = 0.1) -> float:
    """Median of the first `frac` of the points (at least one)."""
    return float(np.median(y[: _count(len(y), frac)]))


def tail(y: np.ndarray, frac: float = 0.1) -> float:
    """Median of the last `frac` of the points (at least one)."""
    return float(np.median(y[-_count(len(y), frac) :]))


def roughness(y: np.ndarray) -> float:
    """Mean |y - running median of 3| relative to the median level: 0 for monotone curves."""
    level = float(np.median(np.abs(y)))
    if len(y) < 3 or level == 0:
        return 0.0
    return float(np.mean(np.abs(y - moving_median(y, 3)))) / level


def noise_sigma(y: np.ndarray) -> float:
    """Robust point-to-point noise scale from second differences (blind to local linear trends)."""
    if len(y) < 5:
        return 0.0
    # an iid second difference has variance 6 sigma^2; the median resists curvature and outliers
    second = np.asarray(y[2:]) - 2 * np.asarray(y[1:-1]) + np.asarray(y[:-2])
    return 1.4826 * float(np.median(np.abs(second))) / np.sqrt(6.0)


def slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y over x."""
    x = np.asarray(x, dtype=float)
    xc = x - x.mean()
    denom = float(np.sum(xc * xc))
    return float(np.sum(xc * (np.asarray(y) - np.mean(y))) / denom) if denom else 0.0


def value_at(s: Series, step: int) -> float:
    """The series value at the last logged step <= `step` (its first value if none)."""
    i = int(np.searchsorted(s.steps, step, side="right")) - 1
    return float(s.values[max(i, 0)])


def peak_lr(curves: CurveDict) -> float | None:
    """Highest finite learning rate logged (per epoch or per step), or None."""
    s = first_series(curves, (EPOCH_LR, STEP_LR))
    return float(np.max(s.values)) if s is not None else None


def epoch_lr(curves: CurveDict, epochs: np.ndarray) -> np.ndarray | None:
    """Learning rate at the end of each given epoch, resampling a per-step `lr` when needed."""
    s = series(curves, EPOCH_LR)
    if s is not None:
        return np.array([value_at(s, int(e)) for e in epochs])
    s = series(curves, STEP_LR)
    if s is None or len(s) < 2 or len(epochs) == 0:
        return None
    # Without step<->epoch bookkeeping assume epochs split the logged steps evenly.
    steps_per_epoch = (s.steps[-1] + 1) / (int(np.max(epochs)) + 1)
    return np.array([value_at(s, int((e + 1) * steps_per_epoch) - 1) for e in epochs])


def train_loss(curves: CurveDict, *, prefer_steps: bool) -> Series | None:
    """The train loss per step (`train/loss`) or per epoch, preferring the asked granularity."""
    names = (STEP_LOSS, TRAIN_LOSS) if prefer_steps else (TRAIN_LOSS, STEP_LOSS)
    # a per-step curve only helps when it has many points; per-epoch needs a few epochs
    for name in names:
        s = series(curves, name)
        if s is not None and len(s) >= (20 if name == STEP_LOSS else 3):
            return s
    return None


def fmt(x: float) -> str:
    """Three significant digits, as used in evidence text."""
    return f"{x:.3g}"


def fmt_lr(x: float | None) -> str:
    """A learning rate in compact form (or 'unknown')."""
    return "unknown" if x is None else f"{x:.2g}"


# Suggestions name params.yaml keys. The optimizer, schedule, epochs and early stopping live under
# the training stage's section (pretrain or finetune); the curves do not say which, so suggestions
# write STAGE and diagnose(stage=...) fills it in when the caller knows.
STAGE = "<stage>"


def lr_change(lr: float | None, factor: float) -> str:
    """' (peak lr in this run 0.5; try 0.05)' for an lr change by `factor`; '' when lr is unknown.

    "Peak lr in this run" rather than "now": the logged lr is the first param group's after the
    linear scaling rule (in finetune the backbone's, backbone_lr_scale x the configured lr).
    """
    return f" (peak lr in this run {fmt_lr(lr)}; try {fmt_lr(lr * factor)})" if lr else ""
