"""evaluate's figures as PNG files: confusion matrices and the reliability diagram (classes),
predicted against actual with the residuals (regression)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainlab.evaluation.scores import ModelScore
from trainlab.io import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    _pyplot().close(fig)
    return path


def plot_confusion(score: ModelScore, classes: list[str], path: Path) -> Path:
    """The test confusion matrix (rows: true class, columns: predicted), drawn by scikit-learn."""
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = _pyplot().subplots(figsize=(5.5, 5))
    # Names longer than a digit or two run into each other under ten columns: stand them upright.
    rotation = "vertical" if max(map(len, classes), default=0) > 3 else "horizontal"
    ConfusionMatrixDisplay(score.confusion, display_labels=classes).plot(
        ax=ax, cmap="Blues", colorbar=False, values_format="d", xticks_rotation=rotation)
    ax.set(title=f"{score.name}: test acc {score.test['acc']:.3f}")
    return _save(fig, path)


def plot_reliability(scores: list[ModelScore], path: Path) -> Path:
    """Reliability diagram: accuracy against confidence per bin, calibrated, every model."""
    fig, ax = _pyplot().subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for s in scores:
        rows = s.reliability
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o",
                label=f"{s.name} (ECE {s.test['ece']:.3f})")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02), title="test reliability")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_predictions(score: ModelScore, actual: np.ndarray, label: str, path: Path) -> Path:
    """Predicted against actual (with the conformal interval's width) and residuals against predicted."""
    predicted = score.predictions
    half = score.test["interval_width"] / 2
    fig, (left, right) = _pyplot().subplots(1, 2, figsize=(10, 4.5))
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    left.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1, label="perfect")
    if np.isfinite(half):
        left.fill_between([low, high], [low - half, high - half], [low + half, high + half], color="tab:blue",
                          alpha=0.12, label=f"{score.test['interval_level']:.0%} interval "
                                            f"(test coverage {score.test['coverage']:.1%})")
    left.scatter(actual, predicted, s=10)
    left.set(xlabel=f"actual {label}", ylabel=f"predicted {label}",
             title=f"{score.name}: test R² {score.test['r2']:.3f}, RMSE {score.test['rmse']:.4g}")
    left.legend(loc="upper left", fontsize=8)
    right.axhline(0.0, color="grey", linestyle="--", linewidth=1)
    right.scatter(predicted, actual - predicted, s=10)
    right.set(xlabel=f"predicted {label}", ylabel="residual (actual - predicted)", title="test residuals")
    return _save(fig, path)
