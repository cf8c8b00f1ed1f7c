"""Fit-quality rules: underfitting, overfitting, and the plain healthy verdict."""

from __future__ import annotations

import math

import numpy as np

from .curves import (
    STAGE,
    TRAIN_ACC,
    TRAIN_LOSS,
    VAL_ACC,
    VAL_LOSS,
    CurveDict,
    Series,
    accuracy,
    fmt,
    head,
    lr_change,
    moving_mean,
    noise_sigma,
    peak_lr,
    quoted_loss,
    series,
    tail,
    tail_span,
    train_loss,
    value_at,
)
from .findings import Finding

# --- underfitting ------------------------------------------------------------------------------
# A small CNN that cannot reach 80% on its own training set is not fitting it ("well below 0.9").
UNDERFIT_MAX_TRAIN_ACC = 0.8
# ... and train/val accuracies within 10 points: the model is not memorising, it just fails.
UNDERFIT_MAX_ACC_GAP = 0.1
# Without accuracy: final train loss above half the chance loss ln(C) (or half its own start).
UNDERFIT_LOSS_OVER_CHANCE = 0.5
# ... with val loss within 25% of train loss.
UNDERFIT_MAX_LOSS_GAP = 0.25
# Over the last quarter the loss still fell > 2% (or accuracy rose > 0.02): more epochs would help.
STILL_IMPROVING = 0.02

# --- overfitting -------------------------------------------------------------------------------
# Light smoothing (3-epoch running mean) before taking the val-loss argmin as the onset epoch.
OVERFIT_SMOOTH = 3
# Val loss must end > 10% above its minimum: real healthy runs wobble by a few percent.
OVERFIT_MIN_RISE = 0.10
# ... and by > 0.02 nats in absolute terms: at val loss 0.05 a 10% wobble is just noise.
OVERFIT_MIN_ABS_RISE = 0.02
# ... and by > 3 noise sigmas of the val curve.
OVERFIT_NOISE_MULT = 3.0
# The minimum needs >= 2 later epochs, otherwise "rising" is a single noisy point.
OVERFIT_MIN_EPOCHS_AFTER = 2


def _last_quarters(y: np.ndarray) -> tuple[float, float]:
    """Medians of the third and last quarter; the last two points of a run under 4 epochs long
    (a search trial pruned after 3 epochs is mid-descent, not flat)."""
    if len(y) < 4:
        return float(y[-2]), float(y[-1])
    q3, q4 = (float(np.median(q)) for q in np.array_split(y, 4)[2:])
    return q3, q4


def _improving_at_end(loss: Series | None, acc: Series | None) -> bool:
    """Loss still falling (or accuracy still rising) over the last quarter of the run."""
    if loss is not None and len(loss) >= 2:
        q3, q4 = _last_quarters(loss.values)
        return q4 > 0 and (q3 - q4) / q4 > STILL_IMPROVING
    if acc is not None and len(acc) >= 2:
        q3, q4 = _last_quarters(acc.values)
        return q4 - q3 > STILL_IMPROVING
    return False


def _poor_by_accuracy(tr: Series, va: Series | None) -> tuple[str, dict] | None:
    a_tr, a_va = tail(tr.values), tail(va.values) if va is not None else None
    if a_tr >= UNDERFIT_MAX_TRAIN_ACC or (a_va is not None and a_tr - a_va >= UNDERFIT_MAX_ACC_GAP):
        return None
    seen = f"final {tr.name} {fmt(a_tr)}" + (f" and {va.name} {fmt(a_va)}" if va else "")
    return seen + " are both low", {"final_train_acc": a_tr, "final_val_acc": a_va}


def _poor_by_loss(
    tr: Series, va: Series | None, num_classes: int | None
) -> tuple[str, dict] | None:
    l_tr, l_va = tail(tr.values), tail(va.values) if va is not None else None
    has_chance = bool(num_classes and num_classes >= 2)
    ref = math.log(num_classes) if has_chance else head(tr.values)
    if l_tr <= UNDERFIT_LOSS_OVER_CHANCE * ref or (
        l_va is not None and (l_va - l_tr) / l_tr >= UNDERFIT_MAX_LOSS_GAP
    ):
        return None
    ref_name = f"chance ln({num_classes}) = {fmt(ref)}" if has_chance else f"its start {fmt(ref)}"
    seen = f"final {tr.name} {fmt(l_tr)}" + (f" and {va.name} {fmt(l_va)}" if va else "")
    data = {"final_train_loss": l_tr, "final_val_loss": l_va, "reference_loss": ref}
    return seen + f" stay above half of {ref_name}", data


def underfitting(curves: CurveDict, num_classes: int | None = None) -> Finding | None:
    """Train and val both poor and close together (still improving, or flat)."""
    tr_acc, tr = accuracy(curves, TRAIN_ACC), train_loss(curves, prefer_steps=False)
    # accuracy is the direct measure of "poor"; loss relative to chance is the fallback
    if tr_acc is not None and len(tr_acc) >= 2:
        poor = _poor_by_accuracy(tr_acc, accuracy(curves, VAL_ACC))
    elif tr is not None and len(tr) >= 3:
        poor = _poor_by_loss(tr, series(curves, VAL_LOSS), num_classes)
    else:
        poor = None
    if poor is None:
        return None
    (seen, data), improving = poor, _improving_at_end(tr, tr_acc)
    lr = lr_change(peak_lr(curves), 3)
    if improving:
        evidence = seen + ", close together, and still improving at the end of the run."
        suggestion = (
            f"train longer (raise `{STAGE}.epochs`) and/or raise `{STAGE}.optimizer.lr` "
            f"somewhat{lr}."
        )
    else:
        evidence = seen + ", close together, and flat over the last quarter of the run."
        suggestion = (
            "increase capacity (raise `model.width`/`model.depth`, or a convolutional "
            f"`model.arch` such as resnet1d instead of logreg/mlp), raise `{STAGE}.optimizer.lr`"
            f"{lr}, and lower regularisation (`model.dropout`, `{STAGE}.optimizer.weight_decay`)."
        )
    return Finding("underfitting", evidence, suggestion, {**data, "still_improving": improving})


def overfitting(curves: CurveDict, num_classes: int | None = None) -> Finding | None:
    """Val loss bottoms out and rises meaningfully while train loss keeps falling."""
    va = series(curves, VAL_LOSS)
    if va is None or len(va) < 5:
        return None
    smooth = moving_mean(va.values, OVERFIT_SMOOTH)
    i_min = int(np.argmin(smooth))
    after = len(va) - 1 - i_min
    if after < OVERFIT_MIN_EPOCHS_AFTER:
        return None
    best, end = float(smooth[i_min]), float(np.mean(va.values[-min(3, after) :]))
    rise = end - best
    if (
        best <= 0
        or rise / best <= OVERFIT_MIN_RISE
        or rise <= OVERFIT_MIN_ABS_RISE
        or rise <= OVERFIT_NOISE_MULT * noise_sigma(va.values)
    ):
        return None
    onset = va.number(i_min)   # 1-based, as every epoch people see
    tr = series(curves, TRAIN_LOSS)
    tr_text, data = "", {"onset_epoch": onset, "best_val_loss": best, "final_val_loss": end}
    if tr is not None and len(tr) >= 3:
        tr_on, tr_end = value_at(tr, int(va.steps[i_min])), tail(tr.values, 0.1)
        if tr_end >= tr_on:
            return None  # train loss not falling: not memorisation (instability, data shift)
        tr_text = f" while {tr.name} kept falling ({fmt(tr_on)} -> {fmt(tr_end)})"
        data.update(
            train_loss_at_onset=tr_on,
            final_train_loss=tr_end,
            gap_at_onset=best - tr_on,
            final_gap=end - tr_end,
        )
    evidence = (
        f"{VAL_LOSS} bottomed at {fmt(best)} in epoch {onset} and rose to {fmt(end)} by "
        f"epoch {va.number(-1)} (+{rise / best:.0%}){tr_text}."
    )
    suggestion = (
        f"regularise: raise `model.dropout` or `{STAGE}.optimizer.weight_decay`, or use a smaller "
        "model (`model.width`/`model.depth`) or more data (`data.train_samples` for finetune, "
        f"`data.source.num_samples` for pretrain); and keep the weights of epoch {onset}: "
        f"`{STAGE}.early_stopping.enabled: true` with `{STAGE}.early_stopping.patience: 3` "
        f"restores the best epoch, or set `{STAGE}.epochs: {onset}`."
    )
    return Finding("overfitting", evidence, suggestion, data)


def _spans(tr: Series, va: Series) -> str:
    same = tr.unit == va.unit and len(tr) == len(va)
    return tail_span(va) if same else f"{tail_span(tr)} and {tail_span(va)}"


def healthy(curves: CurveDict, num_classes: int | None = None) -> Finding | None:
    """Plain statement of where the curves ended; None when there is nothing to judge."""
    tr, va = train_loss(curves, prefer_steps=False), series(curves, VAL_LOSS)
    va_acc = accuracy(curves, VAL_ACC)
    if tr is None and va is None and va_acc is None:
        return None
    ends = {
        f"final_{k}_loss": tail(s.values) for k, s in (("train", tr), ("val", va)) if s is not None
    }
    if tr is not None and va is not None:
        l_tr, l_va = ends["final_train_loss"], ends["final_val_loss"]
        # Medians over the last epochs, not the last epoch line's figures: say which losses.
        text = (
            f"{quoted_loss(tr)} and {quoted_loss(va)} fell together to {fmt(l_tr)}/{fmt(l_va)} "
            f"(medians of {_spans(tr, va)}; gap {fmt(l_va - l_tr)})"
        )
    else:
        s = tr if tr is not None else va
        text = (
            f"{quoted_loss(s)} ended at {fmt(tail(s.values))} (median of {tail_span(s)})"
            if s is not None
            else "the curves look normal"
        )
    if va_acc is not None:
        text += f", {VAL_ACC} reached {fmt(float(va_acc.values.max()))}"
        ends["best_val_acc"] = float(va_acc.values.max())
    return Finding(
        "healthy", text + "; no problem found.", "nothing to fix; keep these settings.", ends
    )


# Below this many samples a validation split cannot rank epochs or models: one sample moves
# accuracy by more than a point, and the loss minimum sits wherever a few samples put it.
# The same figure is selection.cv_below's default.
SMALL_VALIDATION = 100


def small_validation(val_samples: int | None) -> Finding | None:
    """The epoch (and the model) were selected on a validation split of a handful of samples."""
    if val_samples is None or val_samples >= SMALL_VALIDATION:
        return None
    step = 100.0 / max(val_samples, 1)
    return Finding(
        "small_validation",
        f"the validation split that selected this model has {val_samples} samples: one sample moves "
        f"val/acc by {step:.1f} points, so its best epoch (and any overfitting read off it) is noise.",
        f"select by cross-validation instead (selection.cv_below above {val_samples}; the default "
        f"{SMALL_VALIDATION} does this), or give validation more samples (data.val_fraction).",
        {"val_samples": val_samples},
    )
