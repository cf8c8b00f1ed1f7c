"""Tabular preprocessing (trainlab.data.tables): column kinds, a transform fitted on the
training rows only, raw serving rows, skops files without pickle, and the task read from
the labels. Real scikit-learn and small frames built here; nothing is mocked."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler

from trainlab.data import tables
from trainlab.data.table_plan import TEXT_COMPONENTS, ColumnPlan, column_kind
from trainlab.data.tables import (fit_preprocessor, infer_task, input_schema, load_preprocessor,
                                  output_names, plan_columns, save_preprocessor, transform)
from trainlab.errors import DataError

PATH = "data/table.csv"


def mixed_table(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """Numbers with empty cells, a string category with empty cells, a bool, an integer code,
    an identifier, a date column, a constant and the label (strings: pandas 3's StringDtype)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "row_id": np.arange(n),
        "name": [f"person {i}" for i in range(n)],
        "age": rng.normal(40, 10, n).round(1),
        "income": rng.integers(1_000, 9_000, n),
        "city": pd.array(rng.choice(["Oslo", "Bergen", "Tromsø"], n), dtype="string"),
        "member": rng.choice([True, False], n),
        "stars": rng.integers(1, 4, n),
        "joined": pd.date_range("2021-01-01", periods=n, freq="5D").strftime("%Y/%m/%d"),
        "source": ["web"] * n,
        "label": rng.choice(["yes", "no"], n),
    })
    frame.loc[[3, 7], "age"] = np.nan
    frame.loc[[1, 2, 4, 5, 6, 8], "city"] = pd.NA
    return frame


def plan_of(frame: pd.DataFrame, **overrides) -> ColumnPlan:
    args = {"features": None, "drop": [], "label": "label", "split_column": None, "path": PATH}
    return plan_columns(frame, **{**args, **overrides})


def saved_bytes(preprocessor, tmp_path: Path, name: str) -> bytes:
    save_preprocessor(preprocessor, tmp_path / name)
    return (tmp_path / name).read_bytes()


# --------------------------------------------------------------------------- the plan

def test_a_mixed_table_is_planned_and_described_in_one_line() -> None:
    frame = mixed_table()
    plan = plan_of(frame)
    assert plan.numeric == ("age", "income")
    assert plan.one_hot == ("city", "member", "stars")
    assert plan.dates == (("joined", "%Y/%m/%d"),)
    assert plan.dropped == (("row_id", "identifier: a unique number per row, named like an id"),
                            ("name", "identifier: unique per row"),
                            ("source", "constant: every row is 'web'"))
    assert plan.features == ("age", "income", "city", "member", "stars", "joined")
    names = output_names(fit_preprocessor(frame, plan))
    # Six empty city cells make a level of their own; no level is rare, so no pooled column.
    assert [n for n in names if n.startswith("one_hot__city")] == [
        "one_hot__city_<missing>", "one_hot__city_Bergen", "one_hot__city_Oslo", "one_hot__city_Tromsø"]
    line = plan.describe(names, rows_without_label=3)
    assert line == ("2 numeric (+1 missing-indicator column(s)), 1 date (as year/month/weekday), "
                    "3 categorical one-hot (9 columns), 3 dropped: 'row_id' (identifier: a unique "
                    "number per row, named like an id), 'name' (identifier: unique per row), "
                    "'source' (constant: every row is 'web'); 15 model inputs; "
                    "3 row(s) without a label left out")
    assert "\n" not in line
    binned = output_names(fit_preprocessor(frame, plan, numeric_bins=8))
    assert plan.describe(binned).startswith("2 numeric (+1 missing-indicator column(s)), 1 date (as "
                                            "year/month/weekday), 3 categorical one-hot (9 columns), "
                                            "numbers also in quantile bins (31 piecewise-linear columns)")
    assert input_schema(plan) == [("age", "double"), ("income", "double"), ("city", "string"),
                                  ("member", "string"), ("stars", "string"), ("joined", "string")]


def test_column_kinds_follow_the_stated_rules() -> None:
    n = 400
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({
        "score": rng.integers(0, 500, n),                          # many integers: a quantity
        "code": np.r_[rng.integers(0, 4, n - 3), [9, 9, 9]],       # 5 integers: a code, 9 rare
        "when": pd.to_datetime("2020-01-01") + pd.to_timedelta(rng.integers(0, 900, n), "D"),
        "shop": [f"shop {i % 80}" for i in range(n)],              # 80 levels of 5 rows: text
        "rare": [f"r{i % 150}" for i in range(n)],                 # 150 levels, none in 5 rows: text
        "empty": [np.nan] * n,
        "flag": pd.array([True, None, False, True] * (n // 4), dtype="boolean"),
        "label": rng.normal(size=n),
    })
    plan = plan_of(frame, drop=["score"])
    assert plan.numeric == () and plan.one_hot == ("code", "flag") and plan.text == ("shop", "rare")
    assert plan.dates == (("when", "ISO8601"),)
    assert dict(plan.dropped) == {"score": "listed in data.file.drop", "empty": "all missing"}
    # Up to 64 levels, none seen in 5 rows: nothing to learn a level's column from.
    assert column_kind(pd.Series([f"r{i % 30}" for i in range(100)]), "few") == (
        "rare levels", "no level in 5 or more rows: 30 levels in 100 rows")
    pre = fit_preprocessor(frame, plan)
    names = output_names(pre)
    assert sum(n.startswith("text0__") for n in names) == sum(n.startswith("text1__") for n in names) == TEXT_COMPONENTS
    x = transform(pre, frame)
    assert x.shape == (n, len(names)) and x.dtype == np.float32 and np.isfinite(x).all()
    # Levels seen in fewer than 5 rows share one column with levels never seen.
    rare = pd.DataFrame({"code": [3, 7], "flag": [None, None]}).assign(
        **{c: frame[c].iloc[:2].to_numpy() for c in ("when", "shop", "rare")})
    pooled = transform(pre, rare)[:, names.index("one_hot__code_infrequent_sklearn")]
    assert "one_hot__code_infrequent_sklearn" in names and pooled.tolist() == [0.0, 1.0]
    # An explicitly listed column is used as what it looks like, not dropped.
    explicit = plan_of(frame, features=["score", "rare"])
    assert explicit.numeric == ("score",) and explicit.text == ("rare",) and explicit.dropped == ()


# ------------------------------------------------------------- fitted on train rows only

def test_piecewise_linear_bins_are_quantiles_of_the_fitting_rows_and_saturate_outside() -> None:
    x = np.c_[np.arange(9.0), [0.0] * 5 + [1.0] * 4, [3.0] * 9]     # 9 values, 2 values, 1 value
    pwl = tables.PiecewiseLinear(bins=4).fit(x)
    np.testing.assert_array_equal(pwl.edges_[0], [0.0, 2.0, 4.0, 6.0, 8.0])
    np.testing.assert_array_equal(pwl.edges_[1], [0.0, 1.0])    # tied quantiles merge: one bin
    assert pwl.edges_[2].tolist() == [3.0]                      # a constant: no bin at all
    assert pwl.get_feature_names_out(["a", "b", "c"]).tolist() == [
        "a_bin0", "a_bin1", "a_bin2", "a_bin3", "b_bin0"]
    out = pwl.transform(np.array([[3.0, 0.0, 3.0], [-5.0, 2.0, 9.0], [99.0, 0.5, 0.0]]))
    # 3 fills the first bin (0..2), is half of the second (2..4), none of the rest.
    np.testing.assert_allclose(out, [[1.0, 0.5, 0.0, 0.0, 0.0],
                                     [0.0, 0.0, 0.0, 0.0, 1.0],        # below the range: all 0
                                     [1.0, 1.0, 1.0, 1.0, 0.5]], rtol=0, atol=1e-12)
    # Inside a table (data.file.numeric_bins): every number gets its bins beside its
    # standardised value; off (0, the default), none.
    frame = mixed_table()
    names = output_names(fit_preprocessor(frame, plan_of(frame), numeric_bins=6))
    assert sum(n.startswith("numeric_bins__age_bin") for n in names) == 6
    assert "numeric__age" in names
    assert not any("bins" in n for n in output_names(fit_preprocessor(frame, plan_of(frame))))


def test_transform_is_float32_finite_and_fitted_on_the_train_rows_only(tmp_path: Path) -> None:
    frame = mixed_table()
    train, test = frame.iloc[:45], frame.iloc[45:]
    plan = plan_of(train)
    pre = fit_preprocessor(train, plan, numeric_bins=8)
    x = transform(pre, test)
    assert x.dtype == np.float32 and x.shape == (15, len(output_names(pre))) and np.isfinite(x).all()
    # The numeric columns are standardised with the train rows' statistics, not the test rows'.
    train_x = transform(pre, train)
    age = output_names(pre).index("numeric__age")
    assert abs(train_x[:, age].mean()) < 1e-5 and abs(x[:, age].mean()) > 1e-3

    reference = saved_bytes(pre, tmp_path, "a.skops")
    assert saved_bytes(fit_preprocessor(train, plan, 8), tmp_path, "b.skops") == reference  # deterministic
    bins = [j for j, n in enumerate(output_names(pre)) if n.startswith("numeric_bins__age")]
    # A thermometer of the train bins: full bins, one partly full, then empty ones.
    assert ((x[:, bins] >= 0) & (x[:, bins] <= 1)).all() and (np.diff(x[:, bins], axis=1) <= 0).all()
    changed_test = pd.concat([train, test.assign(age=test["age"] * 100, city="Paris")])
    refit = fit_preprocessor(changed_test.iloc[:45], plan, 8)
    assert saved_bytes(refit, tmp_path, "c.skops") == reference
    changed_train = train.copy()
    changed_train.loc[0, "age"] += 1.0
    assert saved_bytes(fit_preprocessor(changed_train, plan, 8), tmp_path, "d.skops") != reference


def test_serving_rows_may_hold_unseen_levels_empty_cells_and_text_for_numbers() -> None:
    frame = mixed_table()
    frame["age"] = frame["age"].fillna(40.0)             # no empty age cell in training
    plan = plan_of(frame)
    pre = fit_preprocessor(frame, plan)
    assert "numeric__missingindicator_age" not in output_names(pre)
    # What a served model gets: every column as it comes, categoricals as text ("string" schema).
    rows = pd.DataFrame({"age": [None, 31], "income": [5000.0, None], "city": ["Paris", None],
                         "member": ["True", None], "stars": ["2", "9"],
                         "joined": ["2023/05/01", "not a date"],
                         "unused": ["x", "y"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = transform(pre, rows)
    assert x.shape == (2, len(output_names(pre))) and np.isfinite(x).all()
    names = output_names(pre)
    # An unseen level sets no city column (training had no rare level to pool it with); an
    # empty cell is the "<missing>" level.
    city = [j for j, n in enumerate(names) if n.startswith("one_hot__city_")]
    assert x[0, city].tolist() == [0.0] * 4
    assert x[1, names.index("one_hot__city_<missing>")] == 1.0
    # A boolean as text is the same level as the training column's bool; 2 and "2" are too.
    assert x[0, names.index("one_hot__member_True")] == 1.0
    assert x[0, names.index("one_hot__stars_2")] == 1.0
    # The served text rows give what the training frame's own typed rows give.
    typed = frame.iloc[:3]
    as_text = typed.astype({"member": str, "stars": str, "city": object})
    np.testing.assert_array_equal(transform(pre, as_text), transform(pre, typed))


def test_transform_refuses_missing_columns_and_non_numbers_in_one_line() -> None:
    frame = mixed_table()
    pre = fit_preprocessor(frame, plan_of(frame))
    with pytest.raises(DataError, match=r"^the rows lack column\(s\) \['city', 'joined'\]") as err:
        transform(pre, frame.drop(columns=["city", "joined"]))
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"column 'age' holds non-numbers \(e.g. 'forty'\)"):
        transform(pre, frame.astype({"age": object}).assign(age="forty"))
    with pytest.raises(DataError, match=r"column 'income' holds an infinite number"):
        transform(pre, frame.assign(income=np.inf))


# -------------------------------------------------------------------------- skops files

def test_save_and_load_round_trip_gives_the_same_output(tmp_path: Path) -> None:
    frame = mixed_table()
    pre = fit_preprocessor(frame, plan_of(frame))
    save_preprocessor(pre, tmp_path / "pre.skops")
    loaded = load_preprocessor(tmp_path / "pre.skops")
    np.testing.assert_array_equal(transform(loaded, frame), transform(pre, frame))
    assert output_names(loaded) == output_names(pre)


def test_the_trusted_list_is_exactly_what_skops_does_not_trust_itself() -> None:
    # A preprocessor using every branch: numeric with empty cells, date, one-hot, text, bins.
    frame = mixed_table(400)
    frame["shop"] = [f"shop {i % 80}" for i in range(400)]
    plan = plan_of(frame)
    assert plan.numeric and plan.dates and plan.one_hot and plan.text
    blob = skops.io.dumps(fit_preprocessor(frame, plan, numeric_bins=8))
    assert skops.io.get_untrusted_types(data=blob) == sorted(tables.TRUSTED_TYPES)


@pytest.mark.parametrize("payload", ["os.system", "MinMaxScaler"])
def test_a_file_with_any_other_type_is_refused_in_one_line(tmp_path: Path, payload: str) -> None:
    # os.system stands for any function (skops refuses it too); MinMaxScaler for any
    # scikit-learn class, which skops trusts by default but a preprocessor never holds.
    step = FunctionTransformer(os.system, kw_args={"command": "touch pwned"}) \
        if payload == "os.system" else MinMaxScaler()
    path = tmp_path / "other.skops"
    skops.io.dump(ColumnTransformer([("x", step, ["a"])]), path)
    with pytest.raises(DataError) as err:
        load_preprocessor(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path)) and "refused" in message
    assert ("posix.system" in message) if payload == "os.system" else ("MinMaxScaler" in message)
    (tmp_path / "text.skops").write_text("not a zip")
    with pytest.raises(DataError, match=r"text\.skops: not a readable preprocessor file"):
        load_preprocessor(tmp_path / "text.skops")


# ----------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("overrides, key", [
    ({"features": ["age", "height"]}, r"data\.file\.features lists column\(s\) \['height'\]"),
    ({"drop": ["weight"]}, r"data\.file\.drop lists column\(s\) \['weight'\]"),
    ({"features": ["age", "label"]}, r"data\.file\.features lists \['label'\], the label"),
    ({"features": ["age"], "drop": ["age"]}, r"both data\.file\.features and data\.file\.drop"),
    ({"label": "target"}, r"data\.file\.label names column 'target'"),
    ({"split_column": "fold"}, r"data\.file\.split_column names column 'fold'"),
    ({"features": ["age", "empty"]}, r"column 'empty' listed in data\.file\.features has no values"),
    ({"drop": ["age", "income", "city", "member", "stars", "joined"]},
     r"no usable feature columns \(.*'name': identifier: unique per row.*\); set data\.file\.features"),
])
def test_each_refusal_is_one_line_naming_the_file_and_the_key(overrides: dict, key: str) -> None:
    frame = mixed_table().assign(empty=np.nan)
    with pytest.raises(DataError, match=key) as err:
        plan_of(frame, **overrides)
    assert str(err.value).startswith(PATH) and "\n" not in str(err.value)


def test_a_table_with_a_column_name_twice_or_no_rows_is_refused() -> None:
    frame = mixed_table()
    twice = pd.concat([frame, frame[["age"]]], axis=1)
    with pytest.raises(DataError, match=r"column name\(s\) \['age'\] appear more than once"):
        plan_of(twice)
    with pytest.raises(DataError, match=r"no rows to learn the columns from"):
        plan_of(frame.iloc[:0])


@pytest.mark.parametrize("name, identifier", [
    ("id", True), ("PassengerId", True), ("user_ID", True), ("Unnamed: 0", True),
    ("paid", False), ("width", False)])
def test_unique_integers_are_an_identifier_only_when_named_like_one(name: str, identifier: bool) -> None:
    frame = pd.DataFrame({name: np.arange(30)[::-1], "x": np.linspace(0, 1, 30), "label": [0, 1] * 15})
    plan = plan_of(frame)
    assert (name in dict(plan.dropped)) is identifier and (name in plan.numeric) is not identifier


# ---------------------------------------------------------------------------- the task

@pytest.mark.parametrize("labels, expected", [
    (["cat", "dog", "cat", "dog"], "classification"),
    (pd.Series(["a", "b", None, "a"], dtype="string"), "classification"),
    ([True, False, True, False], "classification"),
    (pd.Categorical([1, 2, 1, 2]), "classification"),
    ([0, 1, 2] * 10, "classification"),                       # integer classes
    ([1.0, 2.0, 3.0, np.nan] * 10, "classification"),         # 3 classes read as floats, one empty
    ([0.5, 1.25, 3.0, 2.0], "regression"),                    # non-integer numbers
    (list(range(100)) * 2, "regression"),                     # 100 distinct integers in 200 rows: a count
])
def test_auto_task_is_read_from_the_labels(labels, expected: str) -> None:
    assert infer_task(labels if isinstance(labels, pd.Series) else np.asarray(labels)
                      if not isinstance(labels, pd.Categorical) else pd.Series(labels),
                      "auto", PATH) == expected


def test_ambiguous_or_contradicting_labels_are_refused_naming_data_file_task() -> None:
    # 30 distinct integers in 1000 rows: 30 classes, or a score from 0 to 29?
    with pytest.raises(DataError, match=r"^data/table\.csv: 30 distinct whole-number labels in 1000 "
                                        r"rows could be classes or a quantity; set data\.file\.task: "
                                        r"classification or regression$"):
        infer_task(np.arange(1000) % 30, "auto", PATH)
    with pytest.raises(DataError, match=r"8 distinct whole-number labels in 10 rows"):
        infer_task(np.array([1, 2, 3, 4, 5, 6, 7, 8, 1, 2]), "auto", PATH)
    # The setting is obeyed; regression needs numbers.
    assert infer_task(np.arange(1000) % 30, "classification", PATH) == "classification"
    assert infer_task(np.array([0, 1, 0, 1]), "regression", PATH) == "regression"
    with pytest.raises(DataError, match=r"task is regression but the labels are not numbers "
                                        r"\(e\.g\. 'cat'\); set data\.file\.task: classification"):
        infer_task(np.array(["cat", "dog"]), "regression", PATH)
    with pytest.raises(DataError, match=r"^data\.file\.task: 'guess'; accepted: auto, classification"):
        infer_task(np.array([1, 2]), "guess", PATH)
