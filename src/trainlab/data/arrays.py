"""The in-memory shape of raw data every source returns (sources.py, user_file.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from trainlab.errors import DataError


@dataclass(frozen=True)
class Arrays:
    x: np.ndarray   # float32, shape (n, *input_shape)
    y: np.ndarray   # int64 class indices, or float32 values of a regression target


@dataclass(frozen=True)
class RawData:
    target_train: Arrays
    target_test: Arrays
    source: Arrays | None     # None: no separate corpus; pretraining uses unlabelled target inputs
    target_classes: list[str]     # regression: none
    source_classes: list[str]
    input_shape: tuple[int, ...]
    kind: str = "series"          # table | series | image: what model.arch auto builds for
    task: str = "classification"  # of the target; or regression
    notes: tuple[str, ...] = ()   # what prepare decided, one line each (kind, task, column plan)
    preprocessor: Any = None      # a table's fitted ColumnTransformer (trainlab.data.tables)
    normalization: dict[str, Any] | None = None   # series/images: trainlab.data.normalize's spec
    raw_columns: list[tuple[str, str]] | None = None   # a table's input columns and their types
    example: list | None = None   # two raw training rows (JSON): the served model's input example
    image_resize: str | None = None   # an image folder's: the served model decodes files and fits them so


def check_finite(x: np.ndarray, what: str) -> None:
    """Refuse NaN or infinite feature values, naming the first bad sample."""
    if not np.issubdtype(x.dtype, np.inexact):
        return   # integers (an image folder's uint8 pixels) are always finite: no pass over them
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        raise DataError(f"{what}: {int(bad.sum())} sample(s) contain NaN or infinite values "
                        f"(first at row {int(np.flatnonzero(bad)[0])})")
