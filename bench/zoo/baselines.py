"""The classic baselines bench/own_data.py sets beside the pipeline on the zoo (issue 25).

Tables (every CSV of the zoo) get the raw columns, read with pandas as the file has them,
and the file's own split: rows in `split == "test"` are the test rows, every other row
(train, and val where a file has one) is fitted on, and rows without a label are left
out, as the pipeline leaves them out. Three models:

- one standard preprocessing (`standard_preprocessing`: numbers median-imputed with a
  missing indicator, then standardised; strings and booleans most-frequent-imputed, then
  one-hot, unknown values ignored) before logistic regression (classification) or ridge
  (regression), and before k-NN (k = 5, scikit-learn's default);
- scikit-learn's HistGradientBoosting{Classifier,Regressor} on the raw columns, strings
  turned into pandas `category` (pandas 3 reads them as StringDtype) for its native
  categorical support.

Date columns (strings in one date format pandas can infer) become numbers, days since
1970-01-01, before any of the three sees them, so every baseline has the same columns.
Series and images (NPZ sets, MNIST-1D) keep issue 13's baselines: 1-NN and logistic
regression on the arrays the pipeline prepared. Every model is seeded (random_state=0).
Classification is scored by test accuracy, regression by test R² and RMSE.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TASKS = ("classification", "regression")
KNN_NEIGHBOURS = 5          # tables; series and images use 1-NN (issue 13)
HGB_MAX_CATEGORIES = 255    # HistGradientBoosting's limit on a categorical column's distinct values
EPOCH = pd.Timestamp("1970-01-01")


@dataclass(frozen=True)
class Baseline:
    """One classic model's test score: accuracy, or R² with its RMSE (regression)."""

    model: str                  # as the table names it: logreg, ridge, 5-NN, 1-NN, HGB
    score: float                # accuracy (classification) or R² (regression)
    rmse: float | None = None   # regression only


def best(baselines: dict[str, Baseline]) -> Baseline | None:
    """The best classic baseline: the highest accuracy or R² (on one test set, R² ranks as RMSE does)."""
    return max(baselines.values(), key=lambda b: b.score, default=None)


# ----------------------------------------------------------------------------- tables
def read_table(path: Path, label: str, split_column: str = "split") -> tuple[pd.DataFrame, pd.Series,
                                                                             pd.DataFrame, pd.Series]:
    """A CSV's labelled rows by its split column: (x, y, x_test, y_test); dates as days."""
    frame = pd.read_csv(path)
    frame = frame[frame[label].notna()]
    test = (frame[split_column] == "test").to_numpy()
    x = dates_as_days(frame.drop(columns=[label, split_column]))
    y = frame[label]
    return x[~test], y[~test], x[test], y[test]


def categorical_columns(x: pd.DataFrame) -> list[str]:
    """Columns that are not numbers: strings, booleans, categories (one-hot / native categorical)."""
    return [c for c in x.columns
            if pd.api.types.is_bool_dtype(x[c]) or not pd.api.types.is_numeric_dtype(x[c])]


def dates_as_days(x: pd.DataFrame) -> pd.DataFrame:
    """String columns whose every value is a date in one format pandas infers, as days since 1970-01-01."""
    from pandas.tseries.api import guess_datetime_format

    x = x.copy()
    for column in categorical_columns(x):
        values = x[column].dropna()
        # guess from the first value only: a word such as "March" has no guessable format, while
        # pd.to_datetime alone would fall back to dateutil and call it a date
        fmt = guess_datetime_format(str(values.iloc[0])) if len(values) else None
        if fmt is None or pd.api.types.is_bool_dtype(x[column]):
            continue
        try:
            dates = pd.to_datetime(x[column], format=fmt)
        except (ValueError, TypeError):   # some value is not a date in that format: a string column
            continue
        x[column] = (dates - EPOCH) / pd.Timedelta(days=1)
    return x


def standard_preprocessing(x: pd.DataFrame):
    """Numbers: median impute + missing indicator, standardise; the rest: most frequent impute, one-hot."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    categorical = categorical_columns(x)
    numeric = [c for c in x.columns if c not in categorical]
    # strings, booleans and categories as plain objects: one dtype SimpleImputer and OneHotEncoder
    # both take, with NaN as the missing value
    as_objects = FunctionTransformer(lambda frame: frame.astype(object).where(frame.notna(), np.nan))
    return ColumnTransformer([
        ("numeric", make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()), numeric),
        ("categorical", make_pipeline(as_objects, SimpleImputer(strategy="most_frequent"),
                                      OneHotEncoder(handle_unknown="ignore")), categorical),
    ])


def as_categories(x: pd.DataFrame, x_test: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Strings and booleans as pandas `category`, the categories those of the fitted rows.

    A test value never seen in training becomes missing. A column with more distinct values
    than HistGradientBoosting accepts keeps its most frequent ones; the rarer become missing.
    """
    x, x_test = x.copy(), x_test.copy()
    for column in categorical_columns(x):
        counts = x[column].value_counts()
        # the most frequent first, ties by value: the same categories on every run
        ranked = sorted(counts.index, key=lambda value: (-counts[value], str(value)))
        dtype = pd.CategoricalDtype(sorted(ranked[:HGB_MAX_CATEGORIES], key=str))
        x[column], x_test[column] = x[column].astype(object).astype(dtype), x_test[column].astype(object).astype(dtype)
    return x, x_test


def table_baselines(x: pd.DataFrame, y: pd.Series, x_test: pd.DataFrame, y_test: pd.Series,
                    task: str) -> dict[str, Baseline]:
    """Linear model, k-NN and HistGradientBoosting fitted on (x, y), scored on the test rows."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.pipeline import make_pipeline

    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    regression = task == "regression"
    if regression:
        y, y_test = y.astype(np.float64), y_test.astype(np.float64)
        linear, knn, hgb = (Ridge(random_state=0), KNeighborsRegressor(n_neighbors=KNN_NEIGHBOURS),
                            HistGradientBoostingRegressor(categorical_features="from_dtype", random_state=0))
    else:
        linear, knn, hgb = (LogisticRegression(max_iter=5000, random_state=0),
                            KNeighborsClassifier(n_neighbors=KNN_NEIGHBOURS),
                            HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0))
    out = {}
    for role, name, model in (("linear", "ridge" if regression else "logreg", linear),
                              ("knn", f"{KNN_NEIGHBOURS}-NN", knn)):
        fitted = make_pipeline(standard_preprocessing(x), model).fit(x, y)
        out[role] = scored(name, fitted.predict(x_test), y_test, regression)
    raw, raw_test = as_categories(x, x_test)
    out["hgb"] = scored("HGB", hgb.fit(raw, y).predict(raw_test), y_test, regression)
    return out


def scored(model: str, predicted, y_test, regression: bool) -> Baseline:
    """Accuracy, or R² and RMSE, of `predicted` against `y_test`."""
    from sklearn.metrics import accuracy_score, r2_score, root_mean_squared_error

    if regression:
        return Baseline(model, float(r2_score(y_test, predicted)), float(root_mean_squared_error(y_test, predicted)))
    return Baseline(model, float(accuracy_score(np.asarray(y_test), np.asarray(predicted))))


# --------------------------------------------------------------------- series, images
def array_baselines(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> dict[str, Baseline]:
    """Test accuracy of logistic regression and 1-NN, on features standardised by the train data."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    xs, xt = scaler.transform(x), scaler.transform(x_test)
    knn = KNeighborsClassifier(n_neighbors=1).fit(xs, y).score(xt, y_test)
    logreg = LogisticRegression(max_iter=5000, random_state=0).fit(xs, y).score(xt, y_test)
    return {"linear": Baseline("logreg", float(logreg)), "knn": Baseline("1-NN", float(knn))}
