"""Stratified, seeded splits: deterministic for a seed, disjoint, class-balanced.

A regression target (float labels) is stratified by its quantiles instead of classes
(`strata`), so every split spans the range of the number to predict.
"""

from __future__ import annotations

import numpy as np

from trainlab.errors import DataError

# Regression targets: at most this many quantile bins, and at least this many samples in
# each, so that every bin keeps members on both sides of a split.
MAX_BINS = 10
MIN_PER_BIN = 10


def strata(y: np.ndarray) -> np.ndarray:
    """What splits are stratified by: the class index, or a float target's quantile bin."""
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.floating):
        return y
    bins = max(1, min(MAX_BINS, len(y) // MIN_PER_BIN))
    edges = np.quantile(y, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, y, side="right").astype(np.int64)


def stratified_split(y: np.ndarray, fraction: float, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, taken) where `taken` holds `fraction` of every class, at least one each."""
    y = strata(y)
    rng = np.random.default_rng(seed)
    rest, taken = [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_take = max(1, int(round(fraction * len(members))))
        if n_take >= len(members):
            raise DataError(
                f"{what}: class {label.item()!r} has {len(members)} sample(s), too few to split off "
                f"{fraction:.0%} and keep some for training (need at least 2 per class)"
            )
        taken.append(members[:n_take])
        rest.append(members[n_take:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(taken))


def stratified_subset(y: np.ndarray, total: int | None, per_class: int | None, seed: int,
                      what: str) -> np.ndarray:
    """Indices of a label budget: `per_class` of each class, or `total` spread in proportion."""
    if total is None and per_class is None:
        return np.arange(len(y))
    if per_class is not None and np.issubdtype(np.asarray(y).dtype, np.floating):
        raise DataError(f"{what}: train_samples_per_class needs classes, but the target is a number to "
                        f"predict (regression); set data.train_samples instead")
    y = strata(y)
    if total is not None and total > len(y):
        raise DataError(f"{what}: train_samples={total} but the train split has only {len(y)} samples")
    rng = np.random.default_rng(seed)
    labels, counts = np.unique(y, return_counts=True)
    if per_class is not None:
        wanted = {label: per_class for label in labels}
    else:
        wanted = _proportional(labels, counts, total)
    chosen = []
    for label, count in zip(labels, counts):
        if wanted[label] > count:
            raise DataError(f"{what}: class {label.item()!r} has {count} samples, budget asks for {wanted[label]}")
        if wanted[label] == 0:
            raise DataError(f"{what}: a budget of {total} leaves class {label.item()!r} with no sample")
        chosen.append(rng.permutation(np.flatnonzero(y == label))[: wanted[label]])
    return np.sort(np.concatenate(chosen))


def _proportional(labels: np.ndarray, counts: np.ndarray, total: int) -> dict:
    """Split `total` over classes in proportion to their counts (largest remainders win)."""
    exact = counts / counts.sum() * total
    base = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - base), kind="stable")[: total - base.sum()]:
        base[i] += 1
    return dict(zip(labels, base))
