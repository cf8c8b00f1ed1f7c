"""Synthetic learning curves the diagnosis tests share."""

from __future__ import annotations

import numpy as np


EPOCHS = 30


# ---------------------------------------------------------------------------------------------
# synthetic run builders
# ---------------------------------------------------------------------------------------------
def pts(values, steps=None) -> list[tuple[int, float]]:
    """(step, value) pairs like MLflow's metric history."""
    steps = range(len(values)) if steps is None else steps
    return [(int(s), float(v)) for s, v in zip(steps, values, strict=True)]


def noisy(rng, y, rel: float) -> np.ndarray:
    """Multiplicative gaussian noise: epoch means wobble in proportion to their level."""
    return np.asarray(y) * (1 + rel * rng.standard_normal(len(y)))


OVERFIT_MIN_EPOCH = 8


def overfit_run(seed: int = 0) -> dict:
    """Train loss decays to ~0; val loss U-shaped with its minimum at epoch 8 of 30."""
    rng = np.random.default_rng(seed)
    t = np.arange(EPOCHS, dtype=float)
    m = OVERFIT_MIN_EPOCH
    down = 0.45 + 1.85 * (np.exp(-t / 2.5) - np.exp(-m / 2.5)) / (1 - np.exp(-m / 2.5))
    up = 0.45 + 0.02 * (t - m) + 0.0015 * (t - m) ** 2
    val = np.where(t <= m, down, up)
    assert int(np.argmin(val)) == m  # the constructed truth
    train = 0.005 + 2.3 * np.exp(-(t + 0.5) / 3.5)
    return {
        "epoch/train_loss": pts(noisy(rng, train, 0.02)),
        "val/loss": pts(noisy(rng, val, 0.03)),
        "epoch/train_acc": pts(1.0 - 0.9 * np.exp(-(t + 0.5) / 3.5)),
        "val/acc": pts(0.86 - 0.76 * np.exp(-(t + 1) / 2.5) + 0.005 * rng.standard_normal(EPOCHS)),
        "epoch/lr": pts(np.full(EPOCHS, 1e-3)),
    }
