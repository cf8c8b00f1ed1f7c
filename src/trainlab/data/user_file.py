"""The user's own data: CSV, Parquet or NPZ, checked before anything trains on it."""

from __future__ import annotations

import errno
import os
import stat
import zipfile
from pathlib import Path

import numpy as np

from trainlab.config.schema import FileConfig
from trainlab.data.arrays import Arrays, RawData, check_finite
from trainlab.data.splits import stratified_split
from trainlab.errors import DataError

TRAIN_NAMES = {"train", "training", "val", "valid", "validation"}
TEST_NAMES = {"test", "testing"}
MAX_AXES = 3   # [length], [channels, length], [H, W], [C, H, W]


def load_user_data(cfg: FileConfig) -> RawData:
    """Read the target file (and an optional source file) into train/test pools."""
    path = Path(cfg.path or "")
    train, test, classes, shape = _read_target(path, cfg)
    if cfg.source_path:
        sx, sy_raw, _ = _read_table_or_npz(Path(cfg.source_path), cfg)
        source_classes = _class_names(sy_raw, Path(cfg.source_path))
        sy = _encode(sy_raw, source_classes)
        source = Arrays(_shape(sx, shape, cfg.source_path), sy)
    else:
        # No separate corpus: prepare gives pretraining the target train pool's inputs
        # without their labels (never validation or test samples, never a label).
        source, source_classes = None, []
    return RawData(train, test, source, classes, source_classes, shape)


def _read_target(path: Path, cfg: FileConfig):
    x, labels, split = _read_table_or_npz(path, cfg)
    _check_labels(labels, path, cfg)
    if split is None:
        classes = _class_names(labels, path)
        y = _encode(labels, classes)
        train_idx, test_idx = stratified_split(y, cfg.test_fraction, 0, f"{path}")
    else:
        split = np.asarray([str(s).strip().lower() for s in split])
        unknown = sorted(set(split.tolist()) - TRAIN_NAMES - TEST_NAMES)
        if unknown:
            raise DataError(f"{path}: column '{cfg.split_column}' has value(s) {unknown[:3]}; "
                            f"accepted: train, val, test")
        train_idx, test_idx = np.flatnonzero(np.isin(split, list(TRAIN_NAMES))), np.flatnonzero(np.isin(split, list(TEST_NAMES)))
        for name, idx in (("train", train_idx), ("test", test_idx)):
            if len(idx) == 0:
                raise DataError(f"{path}: the {name} split is empty")
        classes = _class_names(labels[train_idx], path)
        unseen = sorted({str(v) for v in labels[test_idx]} - set(classes))
        if unseen:
            raise DataError(f"{path}: test labels {unseen[:3]} never appear in the train split")
        y = _encode(labels, classes)
    shape = tuple(cfg.shape) if cfg.shape else tuple(x.shape[1:])
    x = _shape(x, shape, str(path))
    if cfg.standardize:
        # Statistics of the train pool only: the test split must not leak into training.
        mean, std = x[train_idx].mean(axis=0), x[train_idx].std(axis=0)
        x = (x - mean) / np.where(std > 0, std, 1.0)
    return Arrays(x[train_idx], y[train_idx]), Arrays(x[test_idx], y[test_idx]), classes, shape


def _read_table_or_npz(path: Path, cfg: FileConfig):
    """Features, raw labels and the split column (or None), validated."""
    _check_regular_file(path, "data.file.source_path" if str(path) == cfg.source_path else "data.file.path")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path)
    if suffix not in {".csv", ".parquet", ".pq"}:
        raise DataError(f"data.file.path: {path} has suffix '{suffix}'; accepted: .csv, .parquet, .npz")
    import pandas as pd

    try:
        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except Exception as err:  # a parser's own error: report it in one line, naming the file
        raise DataError(f"{path}: could not be read: {str(err).splitlines()[0]}") from None
    needed = [cfg.label] + ([cfg.split_column] if cfg.split_column else []) + list(cfg.features or [])
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the file has {list(frame.columns)[:10]}")
    if frame.empty:
        raise DataError(f"{path}: has column names but no rows of data")
    labels = frame[cfg.label]
    if labels.isna().any():
        raise DataError(f"{path}: column '{cfg.label}' has {int(labels.isna().sum())} missing label(s)")
    features = list(cfg.features) if cfg.features else [
        c for c in frame.columns if c not in {cfg.label, cfg.split_column}]
    if not features:
        raise DataError(f"{path}: no feature columns besides '{cfg.label}'")
    non_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise DataError(f"{path}: feature column(s) {non_numeric[:5]} are not numeric "
                        f"(e.g. {frame[non_numeric[0]].iloc[0]!r})")
    x = frame[features].to_numpy(dtype=np.float32)
    check_finite(x, str(path))
    split = frame[cfg.split_column].to_numpy() if cfg.split_column else None
    return x, labels.to_numpy(), split


def _read_npz(path: Path):
    """An NPZ with x/y (one pool) or x_train/y_train/x_test/y_test (its own split)."""
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
    if y.dtype.kind == "f" and np.isnan(y).any():
        raise DataError(f"{path}: y has {int(np.isnan(y).sum())} missing label(s)")
    return x, y, split


def _check_regular_file(path: Path, key: str) -> None:
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
    """Samples along the first axis of x, one class label per sample in y."""
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


def _check_labels(labels: np.ndarray, path: Path, cfg: FileConfig) -> None:
    """Labels must be classes: a measured quantity (regression target) is refused with its values."""
    values = np.asarray(labels)
    if values.dtype.kind == "f" and not np.all(np.mod(values, 1) == 0):
        example = next(float(v) for v in values if not float(v).is_integer())
        what = "y" if path.suffix.lower() == ".npz" else f"column '{cfg.label}'"
        raise DataError(f"{path}: {what} holds non-integer numbers (e.g. {example}); classification "
                        f"needs class labels (integers or names), not a measured value")
    names, counts = np.unique([_label_text(v) for v in values], return_counts=True)
    if len(names) > 2 and len(names) > len(values) // 2:
        raise DataError(f"{path}: {len(names)} distinct labels for {len(values)} samples (e.g. "
                        f"{', '.join(map(str, names[:3]))}); that looks like a measured value, not classes")
    single = [str(name) for name in names[counts < 2]]
    if single:
        raise DataError(f"{path}: class {single[0]!r} has only 1 sample; every class needs at least 2 "
                        f"to be split into train and validation")


def _class_names(labels: np.ndarray, path: Path) -> list[str]:
    values = sorted({_label_text(v) for v in labels}, key=_natural)
    if len(values) < 2:
        raise DataError(f"{path}: only one class ({values[0] if values else 'none'}) in the labels; "
                        f"classification needs at least 2")
    return values


def _label_text(value) -> str:
    # 3.0 read from a CSV and 3 from an NPZ are the same class.
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _natural(name: str):
    return (0, int(name), "") if name.lstrip("-").isdigit() else (1, 0, name)


def _encode(labels: np.ndarray, classes: list[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(classes)}
    return np.asarray([index[_label_text(v)] for v in labels], dtype=np.int64)


def _shape(x: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    if len(shape) > MAX_AXES:
        raise DataError(f"data.file.shape: {list(shape)} has {len(shape)} axes; accepted: [length], "
                        f"[channels, length], [H, W] or [C, H, W]")
    per_sample = int(np.prod(x.shape[1:]))
    if int(np.prod(shape)) != per_sample:
        raise DataError(f"data.file.shape: {list(shape)} holds {int(np.prod(shape))} values but "
                        f"{what} has {per_sample} features per sample")
    return x.reshape(len(x), *shape).astype(np.float32)
