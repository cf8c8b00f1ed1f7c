"""The user's own data: a table (CSV, Parquet), arrays (NPZ) or a folder of images, read as the user has it.

What prepare decides here, each printed in one line:

- **kind** (`data.file.kind: auto`): a CSV or Parquet file is a *table* (columns of
  numbers, strings, booleans, empty cells), unless `data.file.shape` says each row is a
  series or an image. NPZ arrays are *series* when a sample has one axis ([length]) or
  two unequal ones ([channels, length]), *images* when it has two equal axes ([H, W]) or
  three ([C, H, W]). A CSV of series without a shape, or an NPZ of table rows, needs the
  key set (`kind: series` / `kind: table`). A folder (`data.file.path` names a directory)
  is images, one class per subfolder, decoded by `trainlab.data.image_folder`; from there
  on it takes the route of an NPZ of images.
- **task** (`data.file.task: auto`): classification or regression, from the label values
  (`trainlab.data.tables.infer_task`). Rows without a label are left out and counted.
- **inputs**: a table goes through a scikit-learn `ColumnTransformer` fitted on the
  training rows only (`trainlab.data.tables`); series and images are normalised
  (`trainlab.data.normalize`), fitted on the training rows only. Both are stored with the
  prepared data and applied by the served model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainlab.config.schema import FileConfig
from trainlab.data.arrays import Arrays, RawData, check_finite
from trainlab.data.file_reading import (FILE_SUFFIXES, MAX_AXES, TEST_NAMES, TRAIN_NAMES, read_frame, read_npz,
                                        value_columns)
from trainlab.data.normalize import fit_normalization, normalize, resolve_mode
from trainlab.data.splits import stratified_split
from trainlab.errors import DataError

# A regression target needs enough distinct values to be a quantity at all.
MIN_DISTINCT_TARGETS = 3
EXAMPLE_ROWS = 2   # raw training rows kept as the served model's input example


@dataclass
class Loaded:
    """One file as read: a frame (CSV/Parquet) or arrays (NPZ, an image folder), its labels and split column."""

    path: Path
    frame: Any | None          # pandas DataFrame of the feature columns (tables)
    x: np.ndarray | None       # (n, *shape) (NPZ; an image folder's uint8 (n, C, H, W))
    labels: np.ndarray
    split: np.ndarray | None
    unlabelled: int = 0        # rows left out because their label is missing
    notes: list[str] = field(default_factory=list)   # what reading decided (an image folder's size, ...)

    def rows(self, keep: np.ndarray) -> "Loaded":
        frame = None if self.frame is None else self.frame.iloc[keep].reset_index(drop=True)
        x = None if self.x is None else self.x[keep]
        split = None if self.split is None else self.split[keep]
        return Loaded(self.path, frame, x, self.labels[keep], split, self.unlabelled, self.notes)


def load_user_data(cfg: FileConfig) -> RawData:
    """Read the target file (and an optional source file) into train/test pools."""
    from trainlab.data.tables import infer_task

    loaded = _read(cfg.uses("path"), cfg, "data.file.path")
    kind = resolve_kind(cfg, loaded)
    task = infer_task(loaded.labels, cfg.task, f"{loaded.path}: column '{cfg.label}'"
                      if loaded.frame is not None else f"{loaded.path}: y")
    targets, classes = _targets(loaded, task)
    train_idx, test_idx = _train_test(loaded, targets, cfg)
    inputs = _fit_inputs(loaded, train_idx, kind, cfg, targets[train_idx], task)
    x = inputs.transform(loaded)
    what = (f"a folder of {len(targets)} labelled images" if _is_image_folder(loaded.path)
            else f"{'an' if kind == 'image' else 'a'} {kind} of {len(targets)} labelled rows")
    notes = [f"data: {loaded.path.name}: {what}, {task}"
             + (f" ({len(classes)} classes)" if task == "classification" else f" of '{cfg.label}'")
             + (f"; {loaded.unlabelled} row(s) without a label left out" if loaded.unlabelled else ""),
             *loaded.notes, inputs.note]
    source, source_classes = None, []
    if cfg.uses("source_path"):
        source, source_classes, source_notes = _source(cfg, inputs)
        notes += [f"source: {note}" for note in source_notes]
    return RawData(Arrays(x[train_idx], targets[train_idx]), Arrays(x[test_idx], targets[test_idx]),
                   source, classes, source_classes, tuple(x.shape[1:]), kind=kind, task=task,
                   notes=tuple(notes), preprocessor=inputs.preprocessor, normalization=inputs.normalization,
                   raw_columns=inputs.raw_columns, example=inputs.example(loaded, train_idx[:EXAMPLE_ROWS]),
                   image_resize=cfg.image.resize if _is_image_folder(loaded.path) else None)


def resolve_kind(cfg: FileConfig, loaded: Loaded) -> str:
    """table, series or image: the setting, or what the file's layout says (module docstring)."""
    if cfg.kind != "auto":
        return cfg.kind
    if loaded.frame is not None and cfg.shape is None:
        return "table"
    shape = tuple(cfg.shape) if cfg.shape else tuple(loaded.x.shape[1:])
    if len(shape) == 3 or (len(shape) == 2 and shape[0] == shape[1]):
        return "image"
    return "series"


def _read(path: Path, cfg: FileConfig, key: str, like: tuple[int, ...] | None = None) -> Loaded:
    """The file (or image folder) `key` names; `like`: the sample shape an image folder must take."""
    if _is_image_folder(path):
        return _read_folder(path, cfg, key, like)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        x, labels, split = read_npz(path, key)
        loaded = Loaded(path, None, x, labels, split)
    else:
        frame, labels, split = read_frame(path, cfg, key)
        loaded = Loaded(path, frame, None, labels, split)
    missing = _missing(loaded.labels)
    if missing.any():
        loaded = loaded.rows(np.flatnonzero(~missing))
        loaded.unlabelled = int(missing.sum())
        if len(loaded.labels) == 0:
            raise DataError(f"{path}: every row's label ('{cfg.label}') is missing")
    return loaded


def _is_image_folder(path: Path) -> bool:
    """A directory is read as images, unless its name says a file was meant ("data.csv/"):
    that one is refused as what it is (file_reading.check_regular_file)."""
    return path.is_dir() and path.suffix.lower() not in FILE_SUFFIXES


def _read_folder(path: Path, cfg: FileConfig, key: str, like: tuple[int, ...] | None) -> Loaded:
    from trainlab.data.image_folder import read_image_folder

    if cfg.kind not in ("auto", "image"):
        raise DataError(f"data.file.kind: {cfg.kind}, but {key} names a folder ({path}), read as images; "
                        f"set kind: auto or image")
    if cfg.shape is not None:
        raise DataError(f"data.file.shape: {list(cfg.shape)} does not apply to an image folder ({path}); "
                        f"set data.file.image.size: [H, W] instead")
    folder = read_image_folder(path, cfg.image, key, like, cfg.label, cfg.split_column)
    return Loaded(path, None, folder.x, folder.labels, folder.split, notes=folder.notes)


def _missing(labels: np.ndarray) -> np.ndarray:
    import pandas as pd

    return np.asarray(pd.isna(pd.Series(labels)), dtype=bool)


def _targets(loaded: Loaded, task: str) -> tuple[np.ndarray, list[str]]:
    """Class indices and class names, or the regression target as float32 (names: none)."""
    if task == "regression":
        values = np.asarray(loaded.labels, dtype=np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"{loaded.path}: the label holds infinite values")
        if len(np.unique(values)) < MIN_DISTINCT_TARGETS:
            raise DataError(f"{loaded.path}: the label has fewer than {MIN_DISTINCT_TARGETS} distinct values; "
                            f"a regression target needs a range (set data.file.task: classification)")
        return values.astype(np.float32), []
    names, counts = np.unique([_label_text(v) for v in loaded.labels], return_counts=True)
    single = [str(name) for name in names[counts < 2]]
    if single:
        raise DataError(f"{loaded.path}: class {single[0]!r} has only 1 sample; every class needs at least 2 "
                        f"to be split into train and validation")
    classes = _class_names(loaded.labels, loaded.path)
    return _encode(loaded.labels, classes), classes


def _train_test(loaded: Loaded, targets: np.ndarray, cfg: FileConfig) -> tuple[np.ndarray, np.ndarray]:
    """The file's own split (its split column, or NPZ's x_train/x_test), else a stratified one."""
    if loaded.split is None:
        return stratified_split(targets, cfg.test_fraction, 0, f"{loaded.path}")
    split = np.asarray([str(s).strip().lower() for s in loaded.split])
    unknown = sorted(set(split.tolist()) - TRAIN_NAMES - TEST_NAMES)
    if unknown:
        raise DataError(f"{loaded.path}: column '{cfg.split_column}' has value(s) {unknown[:3]}; "
                        f"accepted: train, val, test")
    train_idx = np.flatnonzero(np.isin(split, list(TRAIN_NAMES)))
    test_idx = np.flatnonzero(np.isin(split, list(TEST_NAMES)))
    for name, idx in (("train", train_idx), ("test", test_idx)):
        if len(idx) == 0:
            raise DataError(f"{loaded.path}: the {name} split is empty")
    if not np.issubdtype(targets.dtype, np.floating):
        unseen = sorted(set(targets[test_idx].tolist()) - set(targets[train_idx].tolist()))
        if unseen:
            raise DataError(f"{loaded.path}: test labels {[_class_of(loaded, targets, u) for u in unseen[:3]]} "
                            f"never appear in the train split")
    return train_idx, test_idx


def _class_of(loaded: Loaded, targets: np.ndarray, code: int) -> str:
    return _label_text(loaded.labels[int(np.flatnonzero(targets == code)[0])])


@dataclass
class FittedInputs:
    """How raw rows become model inputs: a table's ColumnTransformer, or a normalisation."""

    kind: str
    shape: tuple[int, ...] | None
    preprocessor: Any | None = None
    normalization: dict[str, Any] | None = None
    raw_columns: list[tuple[str, str]] | None = None   # a table's input columns and their types
    note: str = ""

    def transform(self, loaded: Loaded) -> np.ndarray:
        if self.preprocessor is not None:
            from trainlab.data.tables import transform

            return transform(self.preprocessor, loaded.frame[[name for name, _ in self.raw_columns]])
        x = _as_samples(loaded, self.shape)
        if x.dtype == np.uint8:   # an image folder's pixels: stored as they are, normalised when read
            return x
        return normalize(x, self.normalization)

    def example(self, loaded: Loaded, index: np.ndarray) -> list:
        """Raw rows as JSON values: a table's input columns as records (a missing cell as null),
        a series' or image's values flattened."""
        if self.raw_columns:
            import json

            columns = [name for name, _ in self.raw_columns]
            return json.loads(loaded.frame.iloc[index][columns].to_json(orient="records", date_format="iso"))
        return _as_samples(loaded, self.shape)[index].astype(np.float64).reshape(len(index), -1).tolist()


def _fit_inputs(loaded: Loaded, train_idx: np.ndarray, kind: str, cfg: FileConfig,
                train_targets: np.ndarray, task: str) -> FittedInputs:
    """Fit the preprocessing on the training rows only (their targets: for numeric_bins: auto):
    the test rows must not shape it."""
    if kind == "table" and loaded.frame is not None:
        from trainlab.data.encoding_choice import choose_numeric_bins
        from trainlab.data.tables import fit_preprocessor, output_names, plan_columns

        if cfg.normalize not in ("auto", "per_feature"):
            raise DataError(f"data.file.normalize: {cfg.normalize} does not apply to a table, whose columns are "
                            f"standardised one by one inside its fitted preprocessing; accepted: auto, per_feature")
        train_rows = loaded.frame.iloc[train_idx]
        plan = plan_columns(train_rows, cfg.features, cfg.drop, cfg.label, cfg.split_column, str(loaded.path))
        bins, why = cfg.numeric_bins, ""
        if bins == "auto":
            choice = choose_numeric_bins(train_rows, train_targets, task, plan)
            bins, why = choice.bins, choice.note
        preprocessor = fit_preprocessor(train_rows, plan, numeric_bins=bins)
        note = "columns: " + plan.describe(output_names(preprocessor)) + (f"; {why}" if why else "")
        return FittedInputs(kind, None, preprocessor=preprocessor, raw_columns=_column_types(train_rows, plan),
                            note=note)
    if cfg.numeric_bins not in ("auto", 0):
        raise DataError(f"data.file.numeric_bins: {cfg.numeric_bins} applies to tables only, and this {kind} is "
                        f"not one; accepted here: auto, 0")
    _keep_value_columns(loaded, cfg)
    shape = _sample_shape(loaded, cfg)
    x = _as_samples(loaded, shape)
    normalization = fit_normalization(x[train_idx], cfg.normalize, kind)
    mode = resolve_mode(cfg.normalize, kind)
    return FittedInputs(kind, shape, normalization=normalization,
                        note=f"inputs: samples of shape {list(shape)}, normalised {mode}"
                             + (" (data.file.normalize: auto)" if cfg.normalize == "auto" else ""))


def _column_types(frame: Any, plan: Any) -> list[tuple[str, str]]:
    """The served model's input columns with what they hold: "double" (numbers), "string"
    (text) or "any" (booleans, dates): what the MLflow signature declares of each."""
    import pandas as pd

    def kind(column: Any) -> str:
        if pd.api.types.is_bool_dtype(column):
            return "any"
        if pd.api.types.is_numeric_dtype(column):
            return "double"
        return "string" if pd.api.types.is_string_dtype(column) or column.dtype == object else "any"

    return [(name, kind(frame[name])) for name in plan.features]


def _keep_value_columns(loaded: Loaded, cfg: FileConfig) -> None:
    """A CSV of series or images: keep its value columns, which must hold numbers only."""
    if loaded.frame is not None:
        loaded.frame = loaded.frame[value_columns(loaded.frame, cfg, loaded.path)]
        _require_numeric(loaded)


def _sample_shape(loaded: Loaded, cfg: FileConfig) -> tuple[int, ...]:
    natural = tuple(loaded.frame.shape[1:] if loaded.frame is not None else loaded.x.shape[1:])
    shape = tuple(cfg.shape) if cfg.shape else natural
    if len(shape) > MAX_AXES:
        raise DataError(f"data.file.shape: {list(shape)} has {len(shape)} axes; accepted: [length], "
                        f"[channels, length], [H, W] or [C, H, W]")
    if int(np.prod(shape)) != int(np.prod(natural)):
        raise DataError(f"data.file.shape: {list(shape)} holds {int(np.prod(shape))} values but "
                        f"{loaded.path} has {int(np.prod(natural))} features per sample")
    return shape


def _require_numeric(loaded: Loaded) -> None:
    import pandas as pd

    frame = loaded.frame
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])
                   or pd.api.types.is_bool_dtype(frame[c])]
    if non_numeric:
        raise DataError(f"{loaded.path}: column(s) {non_numeric[:5]} are not numbers, but series and images need "
                        f"numbers in every feature column (set data.file.kind: table, or list the value "
                        f"columns in data.file.features)")


def _as_samples(loaded: Loaded, shape: tuple[int, ...]) -> np.ndarray:
    raw = loaded.frame.to_numpy(dtype=np.float32) if loaded.frame is not None else loaded.x
    # An image folder's uint8 stays as it is (no float copy of every image): normalising converts it.
    x = (raw if raw.dtype == np.uint8 else np.asarray(raw, dtype=np.float32)).reshape(len(raw), *shape)
    check_finite(x, str(loaded.path))
    return x


def _source(cfg: FileConfig, inputs: FittedInputs) -> tuple[Arrays, list[str], list[str]]:
    """The labelled pretraining file, through the target's fitted preprocessing (same inputs),
    its class names, and what reading it decided (an image folder's notes)."""
    path = cfg.uses("source_path")
    if _is_image_folder(path) and inputs.kind != "image":
        raise DataError(f"data.file.source_path: {path} is a folder of images, but the target data is a "
                        f"{inputs.kind}; both need the same inputs")
    loaded = _read(path, cfg, "data.file.source_path", like=inputs.shape)
    if inputs.preprocessor is None:
        _keep_value_columns(loaded, cfg)
    if inputs.preprocessor is None and int(np.prod(_sample_shape(loaded, cfg))) != int(np.prod(inputs.shape)):
        raise DataError(f"{path}: samples of {int(np.prod(_sample_shape(loaded, cfg)))} values, but the target "
                        f"file's have {int(np.prod(inputs.shape))}; both files need the same features")
    classes = _class_names(loaded.labels, path)
    return Arrays(inputs.transform(loaded), _encode(loaded.labels, classes)), classes, loaded.notes


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
