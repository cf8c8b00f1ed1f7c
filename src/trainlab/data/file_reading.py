"""Reading the user's file: what is there, checked, before any decision about it.

`read_frame` (CSV, Parquet) and `read_npz` return the features, the raw labels and the
file's own split column (or None); a folder of images is read by `trainlab.data.image_folder`. Every problem is one `DataError` line naming the file
or the key to set.
"""

from __future__ import annotations

import errno
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from trainlab.config.schema import FileConfig
from trainlab.data.arrays import check_finite
from trainlab.errors import DataError

MAX_AXES = 3   # [length], [channels, length], [H, W], [C, H, W]
# A split column's values, and the names of an image folder's split folders (any case).
TRAIN_NAMES = {"train", "training", "val", "valid", "validation"}
TEST_NAMES = {"test", "testing"}
TABLE_SUFFIXES = {".csv", ".parquet", ".pq"}
FILE_SUFFIXES = TABLE_SUFFIXES | {".npz"}   # a path without one of these that is a folder: images


def read_frame(path: Path, cfg: FileConfig, key: str) -> tuple[Any, np.ndarray, np.ndarray | None]:
    """(the whole file as a DataFrame, labels, split column or None) of a CSV or Parquet file."""
    check_regular_file(path, key)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"{key}: {path} has suffix '{suffix}'; accepted: .csv, .parquet, .npz")
    import pandas as pd

    try:
        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except Exception as err:  # a parser's own error: report it in one line, naming the file
        raise DataError(f"{path}: could not be read: {str(err).splitlines()[0]}") from None
    needed = [cfg.label] + ([cfg.split_column] if cfg.split_column else [])
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the file has {list(frame.columns)[:10]}")
    if frame.empty:
        raise DataError(f"{path}: has column names but no rows of data")
    split = frame[cfg.split_column].to_numpy() if cfg.split_column else None
    return frame, frame[cfg.label].to_numpy(), split


def value_columns(frame: Any, cfg: FileConfig, path: Path) -> list[str]:
    """The columns of a series or image file: data.file.features (or every column but label
    and split), less data.file.drop. (A table's are planned by trainlab.data.tables.)"""
    reserved = {cfg.label, cfg.split_column}
    for key, names in (("data.file.features", cfg.features or ()), ("data.file.drop", cfg.drop)):
        unknown = [c for c in names if c not in frame.columns]
        if unknown:
            raise DataError(f"{key}: column(s) {unknown[:5]} are not in {path}; it has {list(frame.columns)[:10]}")
        clash = [c for c in names if c in reserved]
        if clash and key.endswith("features"):
            raise DataError(f"{key}: {clash[0]!r} is the label or split column, not a feature")
    columns = list(cfg.features) if cfg.features else [c for c in frame.columns if c not in reserved]
    columns = [c for c in columns if c not in set(cfg.drop)]
    if not columns:
        raise DataError(f"{path}: no feature columns besides '{cfg.label}' (data.file.features, data.file.drop)")
    return columns


def read_npz(path: Path, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """An NPZ with x/y (one pool) or x_train/y_train/x_test/y_test (its own split)."""
    check_regular_file(path, key)
    # numpy falls back to unpickling what is not a zip and advises allow_pickle=True:
    # wrong advice for a text file with the wrong suffix, and unsafe for a stranger's file.
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an NPZ archive (a .npz file is a zip of .npy arrays, "
                        f"as numpy.savez writes)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as err:
        raise DataError(f"{path}: not a readable NPZ file ({str(err).splitlines()[0]})") from None
    not_arrays = sorted(name for name, value in arrays.items() if not isinstance(value, np.ndarray))
    if not_arrays:
        raise DataError(f"{path}: member(s) {not_arrays[:3]} are not .npy arrays (write the file with numpy.savez)")
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        widths = {name: arrays[name].shape[1:] for name in ("x_train", "x_test")}
        if widths["x_train"] != widths["x_test"]:
            raise DataError(f"{path}: x_train has samples of shape {list(widths['x_train'])} but x_test "
                            f"{list(widths['x_test'])}; both splits need the same features")
        x = np.concatenate([arrays["x_train"], arrays["x_test"]])
        y = np.concatenate([arrays["y_train"], arrays["y_test"]])
        split = np.array(["train"] * len(arrays["y_train"]) + ["test"] * len(arrays["y_test"]))
    elif {"x", "y"} <= arrays.keys():
        x, y, split = arrays["x"], arrays["y"], None
    else:
        raise DataError(f"{path}: expected arrays x, y or x_train, y_train, x_test, y_test; "
                        f"found {sorted(arrays)}")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{path}: features have dtype {x.dtype}, expected numbers")
    _check_npz_shapes(path, x, y)
    x = x.astype(np.float32)
    check_finite(x, str(path))
    return x, y, split


def check_regular_file(path: Path, key: str) -> None:
    """Name what the path really is when it is not a readable file (not just "not found")."""
    try:
        info = path.stat()
    except FileNotFoundError:
        what = f"is a broken symlink (to {os.readlink(path)})" if path.is_symlink() else "not found"
        raise DataError(f"{key}: {path} {what}") from None
    except OSError as err:
        what = "is a symlink loop" if err.errno == errno.ELOOP else f"cannot be opened ({err.strerror})"
        raise DataError(f"{key}: {path} {what}") from None
    if stat.S_ISDIR(info.st_mode):
        raise DataError(f"{key}: {path} is a directory; name a .csv, .parquet or .npz file in it")
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{key}: {path} is not a regular file (a device, pipe or socket)")
    if not os.access(path, os.R_OK):
        raise DataError(f"{key}: {path} is not readable (permission denied)")


def _check_npz_shapes(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Samples along the first axis of x, one label per sample in y."""
    if x.ndim < 2:
        raise DataError(f"{path}: x has shape {list(x.shape)}, one value per sample; expected "
                        f"[samples, features] (or [samples, channels, length], [samples, H, W], ...)")
    if x.ndim - 1 > MAX_AXES:
        raise DataError(f"{path}: x has samples of shape {list(x.shape[1:])}; accepted: [length], "
                        f"[channels, length], [H, W] or [C, H, W]")
    if y.ndim == 2 and y.shape[1] > 1 and np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all():
        raise DataError(f"{path}: y is one-hot encoded (shape {list(y.shape)}); store one class per "
                        f"sample instead, e.g. y.argmax(axis=1)")
    if y.ndim != 1:
        raise DataError(f"{path}: y has shape {list(y.shape)}; expected one label per sample, shape [samples]")
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} feature rows but {len(y)} labels")
    if len(x) == 0:
        raise DataError(f"{path}: holds no samples (x has 0 rows)")
