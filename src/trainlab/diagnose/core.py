"""diagnose(): run the rules in order and resolve which findings explain which."""

from __future__ import annotations

from dataclasses import replace

from . import fit_quality, rules, stability
from .curves import STAGE, CurveDict, Curves, canonicalize
from .findings import Finding, sort_findings


def diagnose(
    curves: Curves, *, num_classes: int | None = None, stage: str | None = None,
    val_samples: int | None = None,
) -> list[Finding]:
    """Findings for a run's curves (metric -> [(step, value)]); `healthy` alone if none apply.

    Suggestions name params.yaml keys such as `<stage>.optimizer.lr`; pass the training stage
    (pretrain or finetune) as `stage` to have it written in. `val_samples`, the size of the
    validation split that selected the epoch, lets a split too small to select be named.
    """
    findings = _findings(canonicalize(curves), num_classes)
    small = fit_quality.small_validation(val_samples)
    if small is not None:
        # A val curve of a few samples moves by whole samples: an "overfitting" read off it is noise.
        findings = sort_findings([small, *(f for f in findings if f.name not in ("overfitting", "healthy"))])
    if stage:
        findings = [replace(f, suggestion=f.suggestion.replace(STAGE, stage)) for f in findings]
    return findings


def _findings(c: CurveDict, num_classes: int | None) -> list[Finding]:
    grads = [f for f in (stability.vanishing_gradients(c), stability.exploding_gradients(c)) if f]
    div = stability.diverged(c, num_classes)
    # After a divergence the loss curves are garbage: shape rules would only echo it.
    found = [div, *grads] if div else [*grads, *_shape_findings(c, num_classes, bool(grads))]
    if found:
        return sort_findings(found)
    verdict = fit_quality.healthy(c, num_classes)
    if verdict is not None:
        return [verdict]
    return [
        Finding(
            "insufficient_data",
            "no train/val loss or accuracy curve with finite values "
            f"was logged (keys seen: {', '.join(sorted(c)) or 'none'}).",
            "log epoch/train_loss and val/loss (the trainlab engine does) and re-run.",
            {"keys": sorted(c)},
        )
    ]


def _shape_findings(c: CurveDict, num_classes: int | None, grad_problem: bool) -> list[Finding]:
    """Loss-shape findings; underfitting only when no more specific cause explains the poor fit."""
    high = rules.lr_too_high(c, num_classes)
    # a jumping loss rules out "too slow" and "stuck at init": both would just echo lr_too_high
    low = None if high else rules.lr_too_low(c, num_classes)
    init = None if high else rules.poor_initialization(c, num_classes, allow_flat=low is None)
    premature = rules.premature_lr_decay(c, num_classes)
    over = fit_quality.overfitting(c, num_classes)
    causes = [f for f in (high, low, init, premature) if f]
    under = None if causes or grad_problem else fit_quality.underfitting(c, num_classes)
    return [f for f in (*causes, over, under) if f]
