"""`data.file.numeric_bins: auto`: the quantile bins are given to a table's numbers only where a
linear probe cross-validated on the training rows clearly gains from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainlab.config.schema import FileConfig
from trainlab.data.encoding_choice import BINS, MIN_ROWS, choose_numeric_bins
from trainlab.data.tables import plan_columns
from trainlab.data.user_file import load_user_data

from helpers.console import message


def band_table(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Classes set by a band of one number (inside or outside |x| < 1): no line of x separates
    them, a threshold on each side does; two noise columns beside it."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1.2, n)
    return pd.DataFrame({"x": x, "noise_a": rng.normal(size=n), "noise_b": rng.normal(size=n),
                         "label": np.where(np.abs(x) < 1, "inside", "outside")})


def linear_table(n: int = 150, seed: int = 0) -> pd.DataFrame:
    """A number that is a noisy line in ten columns: bins only add inputs to overfit."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10))
    frame = pd.DataFrame(x, columns=[f"c{i}" for i in range(10)])
    frame["label"] = x @ rng.normal(size=10) + rng.normal(0, 1.0, n)
    return frame


def choice_for(frame: pd.DataFrame, task: str):
    plan = plan_columns(frame, None, (), "label", None, "table.csv")
    targets = (frame["label"].to_numpy() if task == "regression"
               else pd.factorize(frame["label"], sort=True)[0])
    return choose_numeric_bins(frame, targets, task, plan)


def test_bins_are_chosen_where_the_classes_follow_thresholds() -> None:
    choice = choice_for(band_table(), "classification")
    assert choice.bins == BINS
    assert choice.note.startswith(f"numeric_bins auto: {BINS} (logistic regression, 5-fold accuracy")
    with_bins, without = (float(part.split()[0]) for part in choice.note.split(": ")[-1].split(", "))
    assert with_bins > without + 0.1   # the band is invisible to a line, plain to thresholds


def test_bins_stay_off_for_a_near_linear_number() -> None:
    choice = choice_for(linear_table(), "regression")
    assert choice.bins == 0
    assert "numeric_bins auto: 0 (ridge regression, 5-fold R2" in choice.note


def test_too_few_rows_or_no_numbers_leave_the_bins_off() -> None:
    small = choice_for(band_table(MIN_ROWS - 1), "classification")
    assert small.bins == 0 and f"under {MIN_ROWS}" in small.note
    words = pd.DataFrame({"city": ["Oslo", "Lima"] * 40, "label": ["a", "b", "b", "a"] * 20})
    none = choice_for(words, "classification")
    assert none.bins == 0 and none.note == ""   # nothing numeric: nothing probed, nothing said


def test_prepare_says_what_auto_chose_and_applies_it(tmp_path: Path) -> None:
    path = tmp_path / "band.csv"
    band_table().to_csv(path, index=False)
    auto, off = (load_user_data(FileConfig(path=str(path), numeric_bins=bins)) for bins in ("auto", 0))
    assert f"numeric_bins auto: {BINS}" in auto.notes[1]
    assert "numbers also in quantile bins (24 piecewise-linear columns)" in auto.notes[1]
    assert auto.input_shape[0] == off.input_shape[0] + 3 * BINS
    assert "numeric_bins" not in off.notes[1]


def test_the_choice_never_reads_the_test_rows(tmp_path: Path) -> None:
    frame = band_table()
    frame["split"] = np.where(np.arange(len(frame)) % 4 == 0, "test", "train")
    notes = []
    for label in ("inside", "outside"):   # every test label changed: the choice and its scores must not move
        frame.loc[frame["split"] == "test", "label"] = np.where(np.arange((frame["split"] == "test").sum()) % 2,
                                                                label, "inside")
        path = tmp_path / f"{label}.csv"
        frame.to_csv(path, index=False)
        notes.append(load_user_data(FileConfig(path=str(path), split_column="split")).notes[1])
    assert notes[0] == notes[1] and f"numeric_bins auto: {BINS}" in notes[0]


def test_bins_set_for_series_are_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "series.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.normal(size=(40, 30)).astype(np.float32), y=np.arange(40) % 2)
    assert load_user_data(FileConfig(path=str(path))).kind == "series"   # auto: nothing to refuse
    text = message(load_user_data, FileConfig(path=str(path), numeric_bins=8))
    assert text == "data.file.numeric_bins: 8 applies to tables only, and this series is not one; accepted here: auto, 0"


@pytest.mark.parametrize("value, says", [("some", "expected an integer or auto, got 'some'"),
                                          (-1, "must be >= 0, got -1")])
def test_a_wrong_numeric_bins_names_the_key_and_what_it_accepts(value, says) -> None:
    from trainlab.config import validate
    from trainlab.testing import small_params

    params = small_params()
    params["data"]["file"]["numeric_bins"] = value
    text = message(validate, params)
    assert f"data.file.numeric_bins: {says}" in text
