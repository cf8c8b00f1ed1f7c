"""What to do with each column of a user's table, decided from the training rows.

Every column ends up in exactly one place of a `ColumnPlan`:

    numeric   numbers: median-imputed, a missing-indicator where cells were missing, standardised
              (and, with data.file.numeric_bins, a piecewise-linear encoding over quantile bins)
    dates     datetime columns and strings that parse as dates: expanded to year, month and
              weekday numbers (then treated like numeric columns), not dropped: a season or a
              model year is often what predicts the label (seattle_weather, cars)
    one_hot   categoricals with at most MAX_ONE_HOT_LEVELS levels seen in MIN_LEVEL_ROWS rows:
              one column per such level, the rarer levels (and unseen ones) pooled in one
              column; an empty cell is a level of its own ("<missing>")
    text      categoricals with more than MAX_ONE_HOT_LEVELS distinct levels (names, free text,
              product codes): character n-grams (2 to 4 letters, hashed), reduced to
              TEXT_COMPONENTS columns by a truncated SVD fitted on the training rows: skrub's
              StringEncoder recipe (tf-idf of character n-grams + SVD), with hashing in place
              of the vocabulary. Levels that share parts ("ford pinto", "ford torino") get
              close codes, and a level never seen in training still gets a meaningful one
    dropped   (column, reason): identifiers, constants, all-missing columns, data.file.drop

Why character n-grams for many levels, measured on cars' Name (311 levels in 406 rows;
Origin's test accuracy on the zoo's split, logistic regression / sklearn's MLP): dropped
0.755, one-hot of the levels seen 5+ times 0.725, one-hot of every level 0.784 (the classic
baseline's encoding: 0.824 with days-since-1970 dates), character n-grams 0.99 / 0.99: a car's
make is in its name. Earlier measurements on synthetic levels (MLP, 5-fold, 60 levels of 20
rows): ordinal codes 0.727, no better than dropping the column (0.695): an order means
nothing, and every unseen level shares one code.

`infer_task` decides classification or regression from the labels when the user has not.
Both functions refuse in one line (`DataError`) naming the file and the key to set.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from pandas.tseries.api import guess_datetime_format

from trainlab.errors import DataError

MISSING = "<missing>"     # a categorical's empty cell: a level of its own
# A level seen in fewer than 5 training rows gets no column of its own: its weight would be
# learned from almost nothing. Such levels share one "infrequent" column with the levels
# never seen in training.
MIN_LEVEL_ROWS = 5
# A categorical of up to 64 distinct levels becomes one-hot columns; one with more is
# encoded as text (character n-grams), so one column cannot make the input thousands wide
# (a zip code, a product name) and its rare levels still carry information.
MAX_ONE_HOT_LEVELS = 64
TEXT_GRAMS = 1024        # hashed character n-gram features per text column, before the SVD
TEXT_COMPONENTS = 30     # columns a text column becomes (skrub's StringEncoder default)
# An integer column with at most 10 distinct values, each seen twice on average, is a code
# (cylinders, a rating, a 0/1 flag), not a quantity: one-hot lets each value have its own
# effect. More values, or values seen once, read as a measured count.
MAX_CODE_LEVELS = 10
# A string column is a date column when this share of its filled cells parse as dates in
# the format of the first one (a few typos are tolerated, they become missing dates).
MIN_DATE_SHARE = 0.95
DATE_PARTS = ("year", "month", "weekday")
# Integer columns named like these and unique per row are row identifiers, not features.
# ("user_id", "ID", "Index", "PassengerId", "Unnamed: 0" as pandas writes an index; not "paid")
ID_NAME = re.compile(r"(?i:(^|[^a-z])(id|idx|index|key)$|^unnamed: \d+$)|[a-z](Id|ID)$")

# infer_task: integer-valued labels with at most 20 distinct values, each seen at least
# twice on average, are classes (digits, grades, star ratings); every class then has a
# chance to appear in both the train and the validation split.
MAX_AUTO_CLASSES = 20
MIN_ROWS_PER_CLASS = 2.0
# More than 20 distinct integers that also make up more than 5% of the rows are a
# quantity (a price in dollars, a count): a class would hold fewer than 20 rows on average.
MIN_DISTINCT_SHARE_FOR_REGRESSION = 0.05
TASKS = ("auto", "classification", "regression")


@dataclass(frozen=True)
class ColumnPlan:
    """The feature columns of a table by kind, in file order, and the columns left out."""

    features: tuple[str, ...]                     # every column the model reads, file order
    numeric: tuple[str, ...] = ()
    dates: tuple[tuple[str, str], ...] = ()       # (column, strptime format or "ISO8601")
    one_hot: tuple[str, ...] = ()
    text: tuple[str, ...] = ()
    dropped: tuple[tuple[str, str], ...] = ()     # (column, reason)

    def describe(self, output_names: Sequence[str], rows_without_label: int = 0) -> str:
        """One line for the log: columns by kind, what was dropped and why, model inputs."""
        def count(prefix: str) -> int:
            return sum(1 for name in output_names if name.startswith(prefix))

        indicators = count("numeric__missingindicator_") + count("date__missingindicator_")
        parts = [f"{len(self.numeric)} numeric" + (f" (+{indicators} missing-indicator column(s))"
                                                   if indicators else "")]
        if self.dates:
            parts.append(f"{len(self.dates)} date (as {'/'.join(DATE_PARTS)})")
        if self.one_hot:
            parts.append(f"{len(self.one_hot)} categorical one-hot ({count('one_hot__')} columns)")
        if self.text:
            parts.append(f"{len(self.text)} text (character n-grams: {count('text')} columns)")
        bins = count("numeric_bins__") + count("date_bins__")
        if bins:
            parts.append(f"numbers also in quantile bins ({bins} piecewise-linear columns)")
        if self.dropped:
            parts.append(f"{len(self.dropped)} dropped: "
                         + ", ".join(f"{name!r} ({why})" for name, why in self.dropped))
        line = ", ".join(parts) + f"; {len(output_names)} model inputs"
        if rows_without_label:
            line += f"; {rows_without_label} row(s) without a label left out"
        return line


def plan_columns(frame: pd.DataFrame, features: Sequence[str] | None, drop: Sequence[str],
                 label: str, split_column: str | None, path: str) -> ColumnPlan:
    """Sort the training rows' columns into numeric/date/one-hot/text/dropped."""
    columns = [str(c) for c in frame.columns]
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise DataError(f"{path}: column name(s) {twice[:5]} appear more than once; rename them")
    for key, name in (("data.file.label", label), ("data.file.split_column", split_column)):
        if name is not None and name not in columns:
            raise DataError(f"{path}: {key} names column {name!r}, which the file does not have "
                            f"(it has {columns[:10]})")
    reserved = {label, split_column} - {None}
    _check_names(path, "data.file.drop", drop, columns, reserved)
    if features is not None:
        _check_names(path, "data.file.features", features, columns, reserved)
        both = [c for c in features if c in set(drop)]
        if both:
            raise DataError(f"{path}: column(s) {both} are listed in both data.file.features and "
                            f"data.file.drop; keep them in one")
    if frame.empty:
        raise DataError(f"{path}: no rows to learn the columns from")

    explicit = features is not None
    candidates = list(features) if explicit else [c for c in columns if c not in reserved]
    kinds: dict[str, list] = {"numeric": [], "dates": [], "one_hot": [], "text": []}
    dropped = [(c, "listed in data.file.drop") for c in candidates if c in set(drop)]
    for name in (c for c in candidates if c not in set(drop)):
        kind, detail = column_kind(frame[name], name)
        if kind == "all missing" and explicit:
            raise DataError(f"{path}: column {name!r} listed in data.file.features has no values "
                            f"(every cell is empty); remove it from data.file.features")
        if kind in kinds and kind != "dates":
            kinds[kind].append(name)
        elif kind == "dates":
            kinds["dates"].append((name, detail))
        elif explicit and kind == "unsupported":
            raise DataError(f"{path}: column {name!r} listed in data.file.features is of type "
                            f"{frame[name].dtype}, which cannot be a feature; remove it")
        elif explicit:
            # The user named it: use it as what it looks like (a constant is harmless).
            kinds[_kept_kind(frame[name])].append(name)
        else:
            dropped.append((name, detail))
    used = {c for k, v in kinds.items() for c in (v if k != "dates" else [n for n, _ in v])}
    if not used:
        why = "; ".join(f"{c!r}: {r}" for c, r in dropped) or "the file has only the label"
        raise DataError(f"{path}: no usable feature columns ({why}); set data.file.features")
    return ColumnPlan(features=tuple(c for c in candidates if c in used),
                      numeric=tuple(kinds["numeric"]), dates=tuple(kinds["dates"]),
                      one_hot=tuple(kinds["one_hot"]), text=tuple(kinds["text"]),
                      dropped=tuple(dropped))


def column_kind(column: pd.Series, name: str) -> tuple[str, str]:
    """(kind, detail): numeric/dates/one_hot/text, or (another kind, the reason to drop it)."""
    filled = column.dropna()
    if filled.empty:
        return "all missing", "all missing"
    if column.nunique(dropna=False) == 1:
        return "constant", f"constant: every row is {filled.iloc[0]!r}"
    if ptypes.is_datetime64_any_dtype(column):
        return "dates", "ISO8601"
    if ptypes.is_bool_dtype(column) or isinstance(column.dtype, pd.CategoricalDtype):
        return _categorical(column)
    if ptypes.is_numeric_dtype(column):
        values = filled.to_numpy(dtype=np.float64)
        integral = bool(np.all(np.mod(values, 1) == 0))
        if integral and len(filled) == len(column) and filled.is_unique and ID_NAME.search(name):
            return "identifier", "identifier: a unique number per row, named like an id"
        if integral and _is_code(filled):
            kind, detail = _categorical(column)
            return (kind, detail) if kind in {"one_hot", "text"} else ("numeric", "")
        return "numeric", ""
    if ptypes.is_timedelta64_dtype(column) or ptypes.is_complex_dtype(column):
        return "unsupported", f"unsupported type {column.dtype}"
    if _has_bools(filled):
        return _categorical(column)        # True/False/NaN: pandas keeps these as objects
    text = filled.astype(str)
    date_format = _date_format(text)
    if date_format:
        return "dates", date_format
    if len(filled) == len(column) and text.is_unique:
        return "identifier", "identifier: unique per row"
    return _categorical(column)


def cell_text(value) -> str:
    """A categorical cell as text: True/False, '4' for 4 and 4.0, MISSING for an empty cell."""
    if isinstance(value, str):
        return value
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))   # 4.0 from a column with empty cells is the level 4
    return str(value)


def input_schema(plan: ColumnPlan) -> list[tuple[str, str]]:
    """(column, "double" | "string") per feature, file order: the served model's input."""
    numeric = set(plan.numeric)
    return [(c, "double" if c in numeric else "string") for c in plan.features]


def infer_task(labels: pd.Series | np.ndarray, setting: str, where: str) -> str:
    """'classification' or 'regression': the setting if given, else read from the labels."""
    if setting not in TASKS:
        raise DataError(f"data.file.task: {setting!r}; accepted: {', '.join(TASKS)}")
    values = (labels if isinstance(labels, pd.Series) else pd.Series(np.asarray(labels))).dropna()
    if values.dtype == object:
        values = values.infer_objects()
    numeric = ptypes.is_numeric_dtype(values) and not ptypes.is_bool_dtype(values) \
        and not isinstance(values.dtype, pd.CategoricalDtype)
    if setting == "regression" and not numeric:
        example = values.iloc[0] if len(values) else None
        raise DataError(f"{where}: data.file.task is regression but the labels are not numbers "
                        f"(e.g. {example!r}); set data.file.task: classification")
    if setting != "auto":
        return setting
    if not numeric:
        return "classification"
    if values.empty:
        raise DataError(f"{where}: no labels to tell classification from regression; "
                        f"set data.file.task: classification or regression")
    numbers = values.to_numpy(dtype=np.float64)
    if not np.all(np.mod(numbers, 1) == 0):
        return "regression"
    distinct = len(np.unique(numbers))
    if distinct <= MAX_AUTO_CLASSES and len(numbers) / distinct >= MIN_ROWS_PER_CLASS:
        return "classification"
    if distinct > MAX_AUTO_CLASSES and distinct > MIN_DISTINCT_SHARE_FOR_REGRESSION * len(numbers):
        return "regression"
    raise DataError(f"{where}: {distinct} distinct whole-number labels in {len(numbers)} rows could "
                    f"be classes or a quantity; set data.file.task: classification or regression")


def _check_names(path: str, key: str, names: Sequence[str], columns: list[str], reserved: set) -> None:
    unknown = [n for n in names if n not in columns]
    if unknown:
        raise DataError(f"{path}: {key} lists column(s) {unknown} that the file does not have "
                        f"(it has {columns[:10]})")
    taken = [n for n in names if n in reserved]
    if taken and key == "data.file.features":
        raise DataError(f"{path}: {key} lists {taken}, the label or split column; remove it")


def _categorical(column: pd.Series) -> tuple[str, str]:
    """text by the number of distinct levels, else one_hot by the levels (an empty cell is one)
    seen in MIN_LEVEL_ROWS+ rows."""
    counts = column.astype(object).map(cell_text).value_counts()
    if len(counts) > MAX_ONE_HOT_LEVELS:
        return "text", ""
    frequent = int((counts >= MIN_LEVEL_ROWS).sum())
    if frequent == 0:
        return "rare levels", (f"no level in {MIN_LEVEL_ROWS} or more rows: "
                               f"{len(counts)} levels in {len(column)} rows")
    return "one_hot", ""


def _is_code(filled: pd.Series) -> bool:
    distinct = filled.nunique()
    return distinct <= MAX_CODE_LEVELS and len(filled) >= 2 * distinct


def _kept_kind(column: pd.Series) -> str:
    if ptypes.is_numeric_dtype(column) and not ptypes.is_bool_dtype(column):
        return "numeric"
    kind, _ = _categorical(column)
    return "text" if kind == "text" else "one_hot"


def _has_bools(filled: pd.Series) -> bool:
    return filled.dtype == object and all(isinstance(v, (bool, np.bool_)) for v in filled)


def _date_format(text: pd.Series) -> str | None:
    """The strptime format nearly all cells parse with (with a year and a month), or None."""
    fmt = guess_datetime_format(text.iloc[0])
    if not fmt or not re.search("%[Yy]", fmt) or not re.search("%[mbB]", fmt):
        return None
    parsed = pd.to_datetime(text, format=fmt, errors="coerce")
    return fmt if parsed.notna().mean() >= MIN_DATE_SHARE else None
