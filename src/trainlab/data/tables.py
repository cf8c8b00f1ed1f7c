"""Tabular preprocessing of a user's table: fitted on the training rows, saved with the model.

    plan = plan_columns(train_rows, features, drop, label, split_column, path)   # table_plan
    pre = fit_preprocessor(train_rows, plan)          # statistics of the rows given, only
    x = transform(pre, rows)                          # raw rows -> float32 (n, k), finite
    save_preprocessor(pre, path) / load_preprocessor(path)     # skops, never pickle

The fitted object is one scikit-learn `ColumnTransformer` that reads the raw columns by name,
so the served model applies it to raw rows as they come: numbers, category names, date
strings, empty cells, levels never seen in training. Date columns are expanded to
year/month/weekday numbers, categoricals with many levels encoded as text: character n-grams
and a truncated SVD (`table_plan` says why).

With `numeric_bins` > 0 (`data.file.numeric_bins`; `auto` decides per table, in
`encoding_choice`) every number and date part reaches the model twice: standardised, and as a
piecewise-linear encoding over that many quantile bins of the training rows (`PiecewiseLinear`;
Gorishniy et al. 2022, "On Embeddings for Numerical Features in Tabular Deep Learning"). An
MLP fed a number alone draws smooth functions of it; the bins let it place a threshold where
the training rows put one, which is where gradient-boosted trees beat it on tables. Measured
on the zoo (bench/RESULTS.md, section 12): 8 bins lift seattle_weather, breast_cancer and
cars_mpg, and cost diabetes (a near-linear target on 331 rows) 0.06 R²: no fixed setting
suits every table.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import skops.io
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from trainlab.data.table_plan import (DATE_PARTS, MIN_LEVEL_ROWS, TEXT_COMPONENTS, TEXT_GRAMS, ColumnPlan,
                                      cell_text, infer_task, input_schema, plan_columns)
from trainlab.errors import DataError

__all__ = ["ColumnPlan", "plan_columns", "infer_task", "input_schema", "fit_preprocessor",
           "transform", "output_names", "save_preprocessor", "load_preprocessor"]

# Every type a saved preprocessor may hold, beyond those skops trusts itself (builtins,
# numpy arrays, and every scikit-learn estimator class). These are exactly what
# skops.io.get_untrusted_types reports for a preprocessor using every branch (a test checks
# it); anything else in a file is refused before a single object is built.
TRUSTED_TYPES = [
    "numpy.dtype",                       # SimpleImputer's _fit_dtype: rebuilt from a name
    "trainlab.data.tables.PiecewiseLinear",
    "trainlab.data.tables.category_text",
    "trainlab.data.tables.date_part_names",
    "trainlab.data.tables.date_parts",
    "trainlab.data.tables.gram_names",
    "trainlab.data.tables.text_grams",
]
# skops itself trusts every scikit-learn estimator; a preprocessor holds only these. Named from
# the public classes (skops records where each class is defined, a private module of sklearn's).
ESTIMATOR_TYPES = {f"{cls.__module__}.{cls.__qualname__}" for cls in (
    ColumnTransformer, Pipeline, SimpleImputer, MissingIndicator, StandardScaler, OneHotEncoder, FunctionTransformer,
    TruncatedSVD)}
ZIP_TIME = (1980, 1, 1, 0, 0, 0)   # the earliest a zip can say: saved files do not vary with the clock


def fit_preprocessor(train_rows: pd.DataFrame, plan: ColumnPlan, numeric_bins: int = 0) -> ColumnTransformer:
    """A ColumnTransformer for the plan, fitted on the rows given (the training rows) only;
    `numeric_bins` > 0 adds each number's piecewise-linear encoding over that many quantile bins."""
    numbers = [("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
               ("scale", StandardScaler())]
    binned = [("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
              ("bins", PiecewiseLinear(numeric_bins))]
    dates = [c for c, _ in plan.dates]
    parts = [
        ("numeric", Pipeline(numbers), list(plan.numeric)),
        ("numeric_bins", Pipeline(binned), list(plan.numeric) if numeric_bins else []),
        ("date", Pipeline([_date_parts(plan), *_fresh(numbers)]), dates),
        ("date_bins", Pipeline([_date_parts(plan), *_fresh(binned)]), dates if numeric_bins else []),
        ("one_hot", Pipeline([("text", _text()), ("encode", OneHotEncoder(
            handle_unknown="infrequent_if_exist", min_frequency=MIN_LEVEL_ROWS,
            sparse_output=False))]), list(plan.one_hot)),
        *((f"text{i}", _text_encoder(len(train_rows)), [column]) for i, column in enumerate(plan.text)),
    ]
    preprocessor = ColumnTransformer([p for p in parts if p[2]], remainder="drop", sparse_threshold=0)
    rows = _raw_columns(train_rows, list(plan.features), list(plan.numeric), "the training rows")
    return preprocessor.fit(rows)


def transform(preprocessor: ColumnTransformer, frame: pd.DataFrame) -> np.ndarray:
    """Raw rows (extra columns ignored) -> float32 model inputs (n, k), all finite."""
    numeric = [c for name, _, cols in preprocessor.transformers_ if name == "numeric" for c in cols]
    rows = _raw_columns(frame, list(preprocessor.feature_names_in_), numeric, "the rows")
    x = np.asarray(preprocessor.transform(rows), dtype=np.float32)
    if not np.isfinite(x).all():   # a number beyond float32 after scaling
        bad = sorted({output_names(preprocessor)[j] for j in np.nonzero(~np.isfinite(x))[1]})
        raise DataError(f"the rows give values too large for float32 in {bad[:5]}")
    return x


def output_names(preprocessor: ColumnTransformer) -> list[str]:
    """The model inputs' names: 'numeric__age', 'numeric__missingindicator_age', 'one_hot__city_Oslo'."""
    return [str(n) for n in preprocessor.get_feature_names_out()]


def save_preprocessor(preprocessor: ColumnTransformer, path: Path) -> None:
    """Write the fitted preprocessor as a skops file, byte-identical for identical fits."""
    Path(path).write_bytes(_canonical(skops.io.dumps(preprocessor)))


def load_preprocessor(path: Path) -> ColumnTransformer:
    """Read a skops file written by save_preprocessor; any type outside the trusted list is refused."""
    try:
        with zipfile.ZipFile(path) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable preprocessor file ({err})") from None
    foreign = sorted(_types(schema) - _ALLOWED)
    if foreign:
        raise DataError(f"{path}: holds type(s) {foreign[:3]} that a trainlab preprocessor never "
                        f"holds; refused without loading")
    try:
        loaded = skops.io.load(path, trusted=TRUSTED_TYPES)
    except Exception as err:   # skops' own refusal (untrusted type) or a damaged file
        raise DataError(f"{path}: refused or unreadable: {str(err).splitlines()[0]}") from None
    if not isinstance(loaded, ColumnTransformer):
        raise DataError(f"{path}: holds a {type(loaded).__name__}, not a fitted preprocessor")
    return loaded


# --------------------------------------------------------------- held by the fitted object
# Referenced by name in saved files (TRUSTED_TYPES): renaming one breaks loading old files.

class PiecewiseLinear(TransformerMixin, BaseEstimator):
    """Each column x as its piecewise-linear encoding over up to `bins` quantile bins of the
    fitting rows: bin t is 0 below its lower edge, 1 above its upper edge, linear between
    (Gorishniy et al. 2022's PLE). Ties merge bins (a column of a few values gets fewer); a
    value outside the training range saturates at 0 or 1. Written here because scikit-learn's
    SplineTransformer (degree 1 spans the same functions) keeps scipy objects that a skops
    file can only hold by trusting scipy's private functions."""

    def __init__(self, bins: int = 8):
        self.bins = bins

    def fit(self, x, y=None):
        x = np.asarray(x, dtype=np.float64)
        self.n_features_in_ = x.shape[1]
        self.edges_ = [np.unique(np.quantile(x[:, j], np.linspace(0.0, 1.0, self.bins + 1)))
                       for j in range(x.shape[1])]
        return self

    def transform(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        out = [np.clip((x[:, [j]] - e[:-1]) / np.diff(e), 0.0, 1.0) for j, e in enumerate(self.edges_)]
        return np.hstack(out) if out else np.empty((len(x), 0))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        names = input_features if input_features is not None else [f"x{j}" for j in range(self.n_features_in_)]
        return np.asarray([f"{c}_bin{t}" for c, e in zip(names, self.edges_) for t in range(len(e) - 1)],
                          dtype=object)


def category_text(cells) -> np.ndarray:
    """Categorical cells as text (table_plan.cell_text): True/False, '4' for 4.0, '<missing>'."""
    frame = pd.DataFrame(cells)
    out = np.empty(frame.shape, dtype=object)
    for j in range(frame.shape[1]):
        out[:, j] = [cell_text(v) for v in frame.iloc[:, j].astype(object)]
    return out


def text_grams(cells, features: int) -> np.ndarray:
    """One text column's cells as counts of their character 2- to 4-grams, hashed into
    `features` columns and scaled to unit length (stateless: nothing to fit or store)."""
    grams = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), n_features=features, alternate_sign=False)
    return grams.transform(category_text(cells)[:, 0]).toarray()


def gram_names(transformer, input_features) -> np.ndarray:
    """Output names of text_grams: 'name_gram0' ... 'name_gram1023'."""
    features = transformer.kw_args["features"]
    return np.asarray([f"{c}_gram{j}" for c in input_features for j in range(features)], dtype=object)


def date_parts(cells, formats: tuple[str, ...]) -> np.ndarray:
    """Dates -> year, month, weekday (0 = Monday) per column; unparseable or empty -> NaN."""
    frame, out = pd.DataFrame(cells), []
    for j, fmt in enumerate(formats):
        column = frame.iloc[:, j]
        if not pd.api.types.is_datetime64_any_dtype(column):
            column = pd.to_datetime(column.astype(object).where(column.notna(), None),
                                    format=fmt, errors="coerce")
        for part in (column.dt.year, column.dt.month, column.dt.day_of_week):
            out.append(part.to_numpy(dtype=np.float64, na_value=np.nan))
    return np.column_stack(out) if out else np.empty((len(frame), 0))


def date_part_names(transformer, input_features) -> np.ndarray:
    """Output names of date_parts: 'when_year', 'when_month', 'when_weekday'."""
    return np.asarray([f"{c}_{part}" for c in input_features for part in DATE_PARTS], dtype=object)


# ------------------------------------------------------------------------------- helpers

def _text_encoder(rows: int) -> Pipeline:
    """Character n-grams of one text column, reduced by a truncated SVD fitted on the training rows."""
    components = max(1, min(TEXT_COMPONENTS, rows - 1))
    return Pipeline([("grams", FunctionTransformer(text_grams, kw_args={"features": TEXT_GRAMS},
                                                   feature_names_out=gram_names)),
                     ("svd", TruncatedSVD(components, random_state=0))])


def _date_parts(plan: ColumnPlan) -> tuple[str, FunctionTransformer]:
    return ("parts", FunctionTransformer(date_parts, kw_args={"formats": tuple(f for _, f in plan.dates)},
                                         feature_names_out=date_part_names))


def _text() -> FunctionTransformer:
    return FunctionTransformer(category_text, feature_names_out="one-to-one")


def _fresh(steps):
    return [(name, type(step)(**step.get_params())) for name, step in steps]


def _raw_columns(frame: pd.DataFrame, columns: list[str], numeric: list[str], what: str) -> pd.DataFrame:
    """The columns the preprocessor reads, numeric ones as float64 (NaN for empty cells)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{what} lack column(s) {missing[:5]} that the preprocessing needs")
    rows = frame.loc[:, columns].copy()
    for name in numeric:
        values = pd.to_numeric(rows[name], errors="coerce").astype("Float64")
        bad = rows[name][values.isna() & rows[name].notna()]
        if len(bad):
            raise DataError(f"{what}: column {name!r} holds non-numbers (e.g. {bad.iloc[0]!r})")
        values = values.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isinf(values).any():
            raise DataError(f"{what}: column {name!r} holds an infinite number; leave the cell "
                            f"empty if the value is unknown")
        rows[name] = values
    return rows


def _types(schema) -> set[str]:
    """Every 'module.Class' named anywhere in a skops schema."""
    found, stack = set(), [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("__module__"), str) and isinstance(node.get("__class__"), str):
                found.add(f"{node['__module__']}.{node['__class__']}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _canonical(blob: bytes) -> bytes:
    """skops' zip with object ids, file names and timestamps made independent of the run.

    skops names arrays and ids after id(obj), a memory address, and stamps each member with
    the clock; both differ between identical fits. Renumbering them in order of appearance
    keeps the references intact and makes equal fits equal files (DVC sees no change)."""
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        schema = json.loads(archive.read("schema.json"))
        members = {name: archive.read(name) for name in archive.namelist()}
    ids: dict[int, int] = {}
    files: dict[str, str] = {}

    def renumber(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "__id__" and isinstance(value, int):
                    node[key] = ids.setdefault(value, len(ids) + 1)   # 0 would read as "no id"
                elif key == "file" and isinstance(value, str) and value in members:
                    node[key] = files.setdefault(value, f"{len(files)}{Path(value).suffix}")
                else:
                    renumber(value)
        elif isinstance(node, list):
            for value in node:
                renumber(value)

    renumber(schema)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        # Compact JSON (skops indents it): a third of the size, read back the same.
        entries = [("schema.json", json.dumps(schema, separators=(",", ":")).encode())]
        entries += sorted((new, members[old]) for old, new in files.items())
        # A member no "file" entry names (none in skops 0.16) is kept as it is.
        entries += sorted((name, data) for name, data in members.items()
                          if name != "schema.json" and name not in files)
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.create_system, info.external_attr = 3, 0o644 << 16
            archive.writestr(info, data)
    return out.getvalue()


# Plain data: containers, numbers, text, arrays and numpy scalar types.
_ALLOWED = ESTIMATOR_TYPES | set(TRUSTED_TYPES) | {
    *(f"builtins.{t}" for t in ("int", "float", "str", "bool", "NoneType", "list", "tuple", "dict", "slice")),
    *(f"numpy.{t}" for t in ("ndarray", "dtype", "float64", "float32", "int64", "int32", "bool_", "str_")),
}
