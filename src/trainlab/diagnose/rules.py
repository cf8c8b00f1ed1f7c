"""Learning-rate and initialisation rules: lr too high/low, premature lr decay, poor init."""

from __future__ import annotations

import math

import numpy as np

from .curves import (
    STAGE,
    STEP_LOSS,
    TRAIN_ACC,
    TRAIN_LOSS,
    VAL_ACC,
    VAL_LOSS,
    CurveDict,
    Series,
    accuracy,
    binned,
    epoch_lr,
    first_series,
    fmt,
    fmt_lr,
    head,
    lr_change,
    moving_median,
    noise_sigma,
    peak_lr,
    roughness,
    series,
    slope,
    tail,
    train_loss,
)
from .findings import Finding

# --- lr_too_high -------------------------------------------------------------------------------
# "Early" = the first 30% of the run: a too-high lr shows before any schedule has decayed it.
EARLY_FRACTION = 0.3
# Smoothed loss climbing > 20% above its start early on: batch noise cannot push a median trend up.
HIGH_LR_EARLY_RISE = 0.2
# Mean |loss - running median of 3| relative to the loss level. Mini-batch noise of a healthy run at
# loss levels near chance is ~2-5%; a too-high lr makes the loss jump by tens of percent.
HIGH_LR_ROUGHNESS = 0.12
# A run whose loss at least halved "reached a low loss"; spikes on top of that are not blamed on lr.
LOW_LOSS_FRACTION = 0.5
# Val loss above 3x chance ln(C) in the early epochs: the weights are thrown far between
# evaluations. Adam at lr 1.0 puts a batch-norm resnet1d's epoch-0 val loss at ~90 (40x chance) and
# an MLP's at ~18 (8x) while their train losses stay near chance; healthy runs start at or below
# chance, and overfitting raises val loss late and gradually, never within the first epochs.
HIGH_LR_VAL_SPIKE = 3.0

# --- lr_too_low --------------------------------------------------------------------------------
# Train loss fell < 10% over the whole run: barely moving.
LR_LOW_MAX_DECREASE = 0.10
# At or above this peak lr even plain SGD takes large steps; a stuck loss there is not an lr-too-low
# problem (poor_initialization / underfitting explain it instead).
LR_NOT_SMALL = 1e-2
# The creep must exceed 3 noise sigmas, so a flat noisy loss is never read as "slowly falling".
CREEP_NOISE_MULT = 3.0

# --- poor_initialization -----------------------------------------------------------------------
# Within 10% of ln(num_classes) counts as "at chance"; epoch-mean noise is far below that.
CHANCE_BAND = 0.10
# A chance plateau must last >= 20% of the run (and >= 2 points): healthy runs leave chance within
# the first epoch.
PLATEAU_MIN_FRACTION = 0.2
PLATEAU_MIN_POINTS = 2
# The escape must take the loss >= 30% below the plateau within no more points than the plateau
# lasted: a sudden cliff, unlike the slow creep of a small lr.
CLIFF_DROP = 0.3
# Initial loss > 3x ln(num_classes): the logits start out huge (bad output-layer init scale).
INIT_LOSS_OVER_CHANCE = 3.0
# "Never left chance" also needs the final train accuracy below 1.3x chance (1/C): a dead network
# sits at ~1/C (0.09-0.11 on MNIST-1D), while a tiny model whose loss is still within the chance
# band but whose accuracy climbed (a width-2 MLP reaches ~0.15 in 5 epochs) is learning, slowly:
# that is underfitting, and batch norm / relu advice would not help it.
CHANCE_ACC_RATIO = 1.3

# --- premature_lr_decay ------------------------------------------------------------------------
# The lr counts as cut once it is below 30% of its running peak.
LR_CUT_FRACTION = 0.3
# Epochs per window for the val slope just before the cut (>= 2 windows before the cut are needed
# to fit its trend; up to 2 windows after it are compared with that trend).
DECAY_WINDOW = 3
# "Improving steeply" before the cut: val loss (or error) falling per epoch by >= 2% of all the
# improvement made so far. Converged runs sit far below (~0.3%), still-learning ones far above.
DECAY_MIN_PRE_RATE = 0.02
# ... and the fitted drop across that window must exceed 5 noise sigmas of the val curve: a 3-point
# slope on a flat noisy plateau has ~1.4 sigma spread, so 5 sigma (3.5 sd) is rare by chance.
DECAY_NOISE_MULT = 5.0
# Time constants (epochs) tried when fitting the pre-cut val trend; 100 epochs is ~linear.
TREND_TAUS = np.geomspace(0.5, 100.0, 48)
# "Stalled" after the cut: the improvement rate fell below 40% of what the pre-cut trend predicts.
# A converging run under cosine slows down as its own trend says and stays near 100%.
DECAY_STALL_RATIO = 0.4


def lr_too_high(curves: CurveDict, num_classes: int | None = None) -> Finding | None:
    """Train loss rising or oscillating strongly early on, without ever reaching a low loss."""
    raw = train_loss(curves, prefer_steps=True)
    if raw is None or len(raw) < 4:
        return None
    s = binned(raw, 100)
    smooth = moving_median(s.values, 3 if len(s) <= 50 else 5)
    start, end = head(s.values, 0.02), tail(smooth, 0.1)
    if start <= 0 or end < LOW_LOSS_FRACTION * start:
        return None
    n_early = max(2, math.ceil(EARLY_FRACTION * len(s)))
    i_peak = int(np.argmax(smooth[:n_early]))
    rise, rough = smooth[i_peak] / start - 1.0, roughness(raw.values)
    spike = _early_val_spike(curves, num_classes)
    if rise <= HIGH_LR_EARLY_RISE and rough <= HIGH_LR_ROUGHNESS and spike is None:
        return None
    lr, parts = peak_lr(curves), []
    if rise > HIGH_LR_EARLY_RISE:
        parts.append(
            f"{s.name} rose from {fmt(start)} to {fmt(smooth[i_peak])} by {s.unit} "
            f"{s.number(i_peak)} (+{rise:.0%})"
        )
    if rough > HIGH_LR_ROUGHNESS:
        parts.append(
            ("it" if parts else s.name) + f" oscillated by ~{rough:.0%} around its running median"
        )
    if spike is not None:
        parts.append(
            f"{VAL_LOSS} jumped to {fmt(spike[1])} in epoch {spike[0]} "
            f"({fmt(spike[1] / math.log(num_classes or 2))}x chance ln({num_classes}))"
        )
    evidence = (
        " and ".join(parts) + f"; {s.name} ended at {fmt(end)}, never below half its start "
        f"(lr {fmt_lr(lr)})."
    )
    suggestion = (
        f"lower `{STAGE}.optimizer.lr` ~10x{lr_change(lr, 0.1)} or lengthen the lr warmup "
        f"(`{STAGE}.schedule.warmup_epochs`, e.g. 2); `trainer.clip_grad_norm: 1.0` also damps "
        "the spikes."
    )
    data = {
        "start_loss": start,
        "early_peak_loss": float(smooth[i_peak]),
        "early_rise": float(rise),
        "roughness": rough,
        "early_val_spike": spike[1] if spike else None,
        "final_loss": end,
        "lr": lr,
    }
    return Finding("lr_too_high", evidence, suggestion, data)


def _early_val_spike(curves: CurveDict, num_classes: int | None) -> tuple[int, float] | None:
    """(epoch, val loss) of a val loss above HIGH_LR_VAL_SPIKE x chance in the early epochs."""
    va = series(curves, VAL_LOSS)
    if va is None or not num_classes or num_classes < 2:
        return None
    n_early = max(1, math.ceil(EARLY_FRACTION * len(va)))
    i = int(np.argmax(va.values[:n_early]))
    if va.values[i] <= HIGH_LR_VAL_SPIKE * math.log(num_classes):
        return None
    return va.number(i), float(va.values[i])


def _creeping(y: np.ndarray) -> bool:
    """Quarter medians falling step after step by more than the noise: a slow, steady descent."""
    quarters = np.array([float(np.median(q)) for q in np.array_split(y, 4)])
    drops, sigma = -np.diff(quarters), noise_sigma(y)
    # every quarter must beat the noise (a flat noisy curve orders its quarters by chance 1 time in
    # 24), and an early drop followed by a plateau is underfitting, not a small lr
    return bool(np.all(drops > sigma)) and drops.sum() > CREEP_NOISE_MULT * sigma


def lr_too_low(curves: CurveDict, num_classes: int | None = None) -> Finding | None:
    """Loss creeping down steadily but by < 10% over the whole run, with a small lr."""
    s = train_loss(curves, prefer_steps=False)
    if s is None or len(s) < 4:
        return None
    s = binned(s, 50)
    start, end = head(s.values), tail(s.values)
    if start <= 0 or (start - end) / start >= LR_LOW_MAX_DECREASE or not _creeping(s.values):
        return None
    lr = peak_lr(curves)
    if lr is not None and lr >= LR_NOT_SMALL:
        return None
    drop = (start - end) / start
    evidence = (
        f"{s.name} only went from {fmt(start)} to {fmt(end)} ({drop:.1%}) over "
        f"{int(s.steps[-1]) + 1} {s.unit}s, falling slowly but steadily (lr {fmt_lr(lr)})."
    )
    suggestion = (
        f"raise `{STAGE}.optimizer.lr` ~10x{lr_change(lr, 10)}; an lr range test finds the "
        "largest stable value."
    )
    return Finding(
        "lr_too_low",
        evidence,
        suggestion,
        {"start_loss": start, "final_loss": end, "relative_decrease": drop, "lr": lr},
    )


_INIT_SUGGESTION = (
    "fix initialisation/normalisation rather than the lr: turn on batch norm "
    "(`model.batchnorm: true`), use a non-saturating `model.activation` (relu or gelu, which the "
    "models' Kaiming init is made for) and a short lr warmup "
    f"(`{STAGE}.schedule.warmup_epochs: 1`)"
)
_DATA_CHECK = "; also check that labels match inputs (a shuffled-label bug looks the same)."


def stuck_loss_advice(stage: str) -> str:
    """What the diagnosis says of a loss that never left its start (poor_initialization), for
    `stage`: also what `optimizer.lr: auto` says when no rate makes the loss fall."""
    return (_INIT_SUGGESTION + _DATA_CHECK).replace(STAGE, stage)


def poor_initialization(
    curves: CurveDict, num_classes: int | None = None, *, allow_flat: bool = True
) -> Finding | None:
    """Loss stuck at chance then dropping suddenly, never leaving chance, or starting far above."""
    s = train_loss(curves, prefer_steps=False)
    if s is None or len(s) < 4:
        return None
    acc = accuracy(curves, TRAIN_ACC)
    chance_acc = CHANCE_ACC_RATIO / num_classes if num_classes else None
    at_chance_acc = acc is None or chance_acc is None or tail(acc.values) < chance_acc
    return _huge_initial_loss(curves, num_classes) or _chance_plateau(
        binned(s, 100), num_classes, allow_flat and at_chance_acc, peak_lr(curves)
    )


def _huge_initial_loss(curves: CurveDict, num_classes: int | None) -> Finding | None:
    s = first_series(curves, (STEP_LOSS, TRAIN_LOSS))
    if not num_classes or num_classes < 2 or s is None:
        return None
    chance, first = math.log(num_classes), float(s.values[0])
    if first <= INIT_LOSS_OVER_CHANCE * chance:
        return None
    evidence = (
        f"{s.name} started at {fmt(first)}, {first / chance:.1f}x the chance loss "
        f"ln({num_classes}) = {fmt(chance)}: the initial logits are far too large."
    )
    suggestion = (
        "the models use PyTorch's default init, so huge initial logits point at unscaled inputs: "
        "check the input normalisation (your own data: `data.file.normalize: auto`) and turn "
        "on batch norm (`model.batchnorm: true`)."
    )
    return Finding(
        "poor_initialization",
        evidence,
        suggestion,
        {"initial_loss": first, "chance_loss": chance, "kind": "huge_initial_loss"},
    )


def _chance_plateau(
    s: Series, num_classes: int | None, allow_flat: bool, lr: float | None
) -> Finding | None:
    y = s.values
    smooth = moving_median(y, 3)
    has_chance = bool(num_classes and num_classes >= 2)
    ref = math.log(num_classes) if has_chance else head(y)
    at = np.abs(smooth - ref) <= CHANCE_BAND * ref
    n_plat = len(y) if at.all() else int(np.argmin(at))
    if n_plat < max(PLATEAU_MIN_POINTS, PLATEAU_MIN_FRACTION * len(y)):
        return None
    level = float(np.median(y[:n_plat]))
    ref_text = f"chance ln({num_classes}) = {fmt(ref)}" if has_chance else f"its start {fmt(ref)}"
    data = {
        "plateau_level": level,
        "plateau_end": s.number(n_plat - 1),
        "reference_loss": ref,
        "lr": lr,
    }
    if n_plat == len(y):  # never left chance: only meaningful when chance is known
        if not (allow_flat and has_chance):
            return None
        evidence = (
            f"{s.name} never left chance level: it stayed at ~{fmt(level)} ({ref_text}) for "
            f"all {len(y)} {s.unit}s although lr was {fmt_lr(lr)}."
        )
        return Finding(
            "poor_initialization",
            evidence,
            _INIT_SUGGESTION + _DATA_CHECK,
            {**data, "kind": "never_left_chance"},
        )
    below = np.nonzero(smooth < (1 - CLIFF_DROP) * ref)[0]
    if not below.size or below[0] - n_plat > max(PLATEAU_MIN_POINTS, n_plat):
        return None  # no escape, or a slow creep rather than a cliff
    i_drop = int(below[0])
    evidence = (
        f"{s.name} sat at ~{fmt(level)} ({ref_text}) until {s.unit} {data['plateau_end']} "
        f"({n_plat / len(y):.0%} of the run), then dropped suddenly to {fmt(y[i_drop])} by "
        f"{s.unit} {s.number(i_drop)}."
    )
    return Finding(
        "poor_initialization",
        evidence,
        _INIT_SUGGESTION + ".",
        {**data, "drop_step": s.number(i_drop), "kind": "stuck_then_drop"},
    )


def _val_error(curves: CurveDict) -> Series | None:
    """Val loss, or 1 - val accuracy, as a lower-is-better per-epoch series."""
    va = series(curves, VAL_LOSS)
    if va is not None:
        return va
    acc = accuracy(curves, VAL_ACC)
    return (
        Series("val error (1 - val/acc)", acc.steps, 1.0 - acc.values) if acc is not None else None
    )


def _lr_cut(lr: np.ndarray) -> int | None:
    """Index of the first epoch whose lr is below LR_CUT_FRACTION of its running peak."""
    running_peak = np.maximum.accumulate(lr)
    cut = np.nonzero(lr < LR_CUT_FRACTION * running_peak)[0]
    return int(cut[0]) if cut.size else None


def _rate(va: Series, window: slice, level: float) -> float:
    """Improvement per epoch over `window`, as a fraction of `level` (positive = improving)."""
    return -slope(va.steps[window], va.values[window]) / level


def _fit_exp_approach(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares fit of y = a + b * exp(-(x - x0) / tau) over a grid of tau; (tau, a, b)."""
    x = np.asarray(x, dtype=float) - float(x[0])
    best: tuple[float, float, float, float] | None = None
    for tau in TREND_TAUS:
        design = np.column_stack([np.ones_like(x), np.exp(-x / tau)])
        coef = np.linalg.lstsq(design, y, rcond=None)[0]
        sse = float(np.sum((design @ coef - y) ** 2))
        if best is None or sse < best[0]:
            best = (sse, float(tau), float(coef[0]), float(coef[1]))
    assert best is not None
    return best[1], best[2], best[3]


def premature_lr_decay(curves: CurveDict, num_classes: int | None = None) -> Finding | None:
    """LR cut hard while val was still improving steeply, with improvement stalling right after."""
    va, w = _val_error(curves), DECAY_WINDOW
    if va is None or len(va) < 3 * w + 2:
        return None
    lr = epoch_lr(curves, va.steps)
    c = _lr_cut(lr) if lr is not None else None
    # >= 2w epochs before the cut to fit its trend; the post window skips the cut epoch and the
    # next (the immediate step-decay drop and the "lr at end of epoch" ambiguity)
    if c is None or c < 2 * w or c + 1 + w >= len(va):
        return None
    level = float(np.max(va.values[:c]) - va.values[c - 1])  # improvement made before the cut
    if level <= 0:
        return None
    pre = _rate(va, slice(c - w, c), level)
    post_end = min(c + 2 + 2 * w, len(va))  # up to 2w post epochs: a longer fit is less noisy
    post = _rate(va, slice(c + 2, post_end), level)
    # where the pre-cut trend was heading: a converging run slows down by itself and must not
    # count as stalled, so extrapolate an exponential approach fitted before the cut
    start = int(np.argmax(va.values[:c]))  # skip a warmup bump
    if c - start < w:
        return None
    tau, _, b = _fit_exp_approach(va.steps[start:c], va.values[start:c])
    post_steps = va.steps[c + 2 : post_end].astype(float)
    expected = float(np.mean(b / tau * np.exp(-(post_steps - va.steps[start]) / tau))) / level
    # both the pre-cut drop and the drop the trend predicts after it must stand out of the noise:
    # "stalled" means nothing only if continued progress would have been too small to see anyway
    visible = DECAY_NOISE_MULT * noise_sigma(va.values) / (level * (w - 1))
    if (
        pre < DECAY_MIN_PRE_RATE
        or min(pre, expected) <= visible
        or post >= DECAY_STALL_RATIO * expected
    ):
        return None
    return _premature_finding(va, lr, c, post_end, (pre, post, expected))


def _premature_finding(
    va: Series, lr: np.ndarray, c: int, post_end: int, rates: tuple[float, float, float]
) -> Finding:
    (pre, post, expected), w, peak = rates, DECAY_WINDOW, float(lr[:c].max())
    e_cut, e_post = va.number(c), va.number(post_end - 1)
    evidence = (
        f"lr was cut from {fmt_lr(peak)} to {fmt_lr(float(lr[c]))} at epoch {e_cut} while "
        f"{va.name} was still falling steeply ({fmt(va.values[c - w])} -> {fmt(va.values[c - 1])} "
        f"over the {w} epochs before, {pre:.1%} of its total gain per epoch); afterwards it "
        f"improved only {max(post, 0):.1%} per epoch (epochs {va.number(c + 2)}-{e_post}; its "
        f"trend predicted {expected:.1%}) and ended at {fmt(va.values[-1])}."
    )
    suggestion = (
        f"decay later: raise `{STAGE}.schedule.step_epochs` (step) or "
        f"`{STAGE}.schedule.plateau_patience` (plateau) so the cut comes after val stops "
        f"improving, or use `{STAGE}.schedule.name: cosine` over more `{STAGE}.epochs`."
    )
    data = {
        "cut_epoch": e_cut,
        "peak_lr": peak,
        "lr_after_cut": float(lr[c]),
        "pre_rate": pre,
        "post_rate": post,
        "expected_post_rate": expected,
    }
    return Finding("premature_lr_decay", evidence, suggestion, data)
