"""The user's own data: CSV, Parquet or NPZ, checked before anything trains on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainlab.config.schema import FileConfig
from trainlab.data.sources import Arrays, RawData, check_finite
from trainlab.data.splits import stratified_split
from trainlab.errors import DataError

TRAIN_NAMES = {"train", "training", "val", "valid", "validation"}
TEST_NAMES = {"test", "testing"}


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
    if not path.is_file():
        raise DataError(f"data.file.path: {path} not found")
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
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except Exception as err:
        raise DataError(f"{path}: not a readable NPZ file ({str(err).splitlines()[0]})") from None
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
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
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} feature rows but {len(y)} labels")
    x = x.astype(np.float32)
    check_finite(x, str(path))
    if y.dtype.kind == "f" and np.isnan(y).any():
        raise DataError(f"{path}: y has {int(np.isnan(y).sum())} missing label(s)")
    return x, y, split


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
    per_sample = int(np.prod(x.shape[1:]))
    if int(np.prod(shape)) != per_sample:
        raise DataError(f"data.file.shape: {list(shape)} holds {int(np.prod(shape))} values but "
                        f"{what} has {per_sample} features per sample")
    return x.reshape(len(x), *shape).astype(np.float32)
