"""The in-memory shape of raw data every source returns (sources.py, user_file.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainlab.errors import DataError


@dataclass(frozen=True)
class Arrays:
    x: np.ndarray   # float32, shape (n, *input_shape)
    y: np.ndarray   # int64 class indices


@dataclass(frozen=True)
class RawData:
    target_train: Arrays
    target_test: Arrays
    source: Arrays | None     # None: no separate corpus; pretraining uses unlabelled target inputs
    target_classes: list[str]
    source_classes: list[str]
    input_shape: tuple[int, ...]


def check_finite(x: np.ndarray, what: str) -> None:
    """Refuse NaN or infinite feature values, naming the first bad sample."""
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        raise DataError(f"{what}: {int(bad.sum())} sample(s) contain NaN or infinite values "
                        f"(first at row {int(np.flatnonzero(bad)[0])})")
