"""Data as users have it: tables with strings and empty cells, numbers to predict, series
normalised per sample, and the `auto` choices that pick the model, the loss and the task.

The pipeline-level tests (`dvc repro` on a raw table, serving raw rows, editing the file)
are in tests/test_user_tables_pipeline.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from trainlab.calibration import conformal_halfwidth
from trainlab.config import validate
from trainlab.config.schema import FileConfig, LossConfig, ModelConfig
from trainlab.data.build import build_splits, standardize_target
from trainlab.data.normalize import fit_normalization, normalize
from trainlab.data.served_inputs import ServedInputs
from trainlab.data.user_file import load_user_data
from trainlab.engine import TrainData, fit
from trainlab.engine.losses import build_loss
from trainlab.errors import DataError
from trainlab.models import build_model
from trainlab.heldout import HeldOut
from trainlab.testing import small_params

from helpers.console import message


def raw_table(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """A table as users have it: numbers, a string category, a boolean, empty cells, an id."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"age": rng.normal(40, 10, n).round(), "income": rng.lognormal(10, 0.5, n),
                          "city": rng.choice(["Lyon", "Oslo", "Lima"], n), "member": rng.choice([True, False], n),
                          "customer": [f"c{i:04d}" for i in range(n)]})
    frame.loc[rng.choice(n, 9, replace=False), "income"] = np.nan
    frame.loc[rng.choice(n, 5, replace=False), "city"] = None
    frame["label"] = np.where((frame["city"] == "Oslo") | (frame["age"] > 45), "buys", "browses")
    return frame


def write(tmp_path: Path, frame: pd.DataFrame, name: str = "table.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


# ------------------------------------------------------------------------------ tables
def test_a_raw_table_is_read_as_it_is(tmp_path: Path) -> None:
    raw = load_user_data(FileConfig(path=str(write(tmp_path, raw_table()))))
    assert (raw.kind, raw.task, raw.target_classes) == ("table", "classification", ["browses", "buys"])
    x = np.concatenate([raw.target_train.x, raw.target_test.x])
    assert x.dtype == np.float32 and np.isfinite(x).all()
    assert [name for name, _ in raw.raw_columns] == ["age", "income", "city", "member"]   # the id is dropped
    assert dict(raw.raw_columns) == {"age": "double", "income": "double", "city": "string", "member": "any"}
    assert "'customer' (identifier: unique per row)" in raw.notes[1]
    assert raw.example[0].keys() == {"age", "income", "city", "member"}


def test_the_preprocessing_is_fitted_on_the_train_rows_only(tmp_path: Path) -> None:
    frame = raw_table()
    frame["split"] = np.where(np.arange(len(frame)) % 4 == 0, "test", "train")
    cfg = FileConfig(path=str(write(tmp_path, frame)), split_column="split")
    before = load_user_data(cfg)
    test_rows = frame["split"] == "test"
    frame.loc[test_rows, "income"] *= 100          # test rows far from the train rows,
    frame.loc[test_rows, "city"] = "Quito"         # with a city training never saw
    write(tmp_path, frame)
    after = load_user_data(cfg)
    np.testing.assert_array_equal(before.target_train.x, after.target_train.x)
    assert np.abs(after.target_test.x).max() > 10 * np.abs(before.target_test.x).max()
    frame.loc[frame.index[~test_rows][0], "income"] = 1e7   # one train row changes the fit
    write(tmp_path, frame)
    assert not np.array_equal(load_user_data(cfg).target_train.x, before.target_train.x)


def test_a_table_refuses_a_normalisation_it_cannot_use(tmp_path: Path) -> None:
    path = write(tmp_path, raw_table())
    assert message(load_user_data, FileConfig(path=str(path), normalize="per_sample")) == (
        "data.file.normalize: per_sample does not apply to a table, whose columns are standardised one by one "
        "inside its fitted preprocessing; accepted: auto, per_feature")


def test_an_unknown_column_to_drop_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, raw_table())
    text = message(load_user_data, FileConfig(path=str(path), drop=("colour",)))
    assert "data.file.drop" in text and "'colour'" in text


def test_numeric_bins_reach_the_model_inputs_and_the_plan_line(tmp_path: Path) -> None:
    path = str(write(tmp_path, raw_table()))
    plain, binned = (load_user_data(FileConfig(path=path, numeric_bins=bins)) for bins in (0, 4))
    # age and income: 4 piecewise-linear columns each, beside what the table had without them.
    assert binned.input_shape[0] == plain.input_shape[0] + 8
    assert "numbers also in quantile bins (8 piecewise-linear columns)" in binned.notes[1]
    assert "quantile bins" not in plain.notes[1]
    np.testing.assert_array_equal(binned.target_train.y, plain.target_train.y)


@pytest.mark.parametrize("numeric_bins", [0, 8])
def test_served_table_inputs_take_raw_rows_ints_and_missing_cells(tmp_path: Path, numeric_bins: int) -> None:
    from trainlab.data.tables import save_preprocessor

    frame = raw_table()
    raw = load_user_data(FileConfig(path=str(write(tmp_path, frame)), numeric_bins=numeric_bins))
    save_preprocessor(raw.preprocessor, tmp_path / "pre.skops")
    inputs = ServedInputs(raw.input_shape, None, raw.raw_columns, tmp_path / "pre.skops")
    inputs.load(inputs.artifacts)
    rows = pd.DataFrame([{"age": 30, "income": None, "city": "Oslo", "member": True},     # an int, a gap
                         {"age": 51.0, "income": 2.5e4, "city": "Quito"}])                # unseen city, no member
    x = inputs(rows)
    assert x.shape == (2, *raw.input_shape) and np.isfinite(x).all()
    from trainlab.data.tables import transform

    first = frame.drop(columns=["label", "customer"]).iloc[[0]]
    np.testing.assert_allclose(inputs(first.to_dict(orient="records")), transform(raw.preprocessor, first))
    with pytest.raises(DataError, match=r"input column\(s\) \['colour'\] are not among the model's"):
        inputs(pd.DataFrame([{"colour": "red"}]))


# ------------------------------------------------------------------------------ regression
def test_a_number_to_predict_is_standardised_on_train_and_stratified_by_range(tmp_path: Path) -> None:
    frame = raw_table(200)
    frame["label"] = 3.0 * frame["age"] + np.random.default_rng(1).normal(0, 5, len(frame)) + 1000.0
    raw = load_user_data(FileConfig(path=str(write(tmp_path, frame))))
    assert raw.task == "regression" and raw.target_train.y.dtype == np.float32
    params = validate(small_params(data__name="file", data__file__path="x", data__train_samples=None))
    splits = build_splits(raw, params.data)
    target, scale = standardize_target(splits["target"])
    assert abs(float(target["train"].y.mean())) < 1e-5 and abs(float(target["train"].y.std()) - 1) < 1e-5
    np.testing.assert_allclose(target["test"].y * scale["std"] + scale["mean"], splits["target"]["test"].y,
                               rtol=1e-5)
    # The validation carve spans the range: its values are not all from one end.
    val = splits["target"]["val"].y
    assert val.min() < np.median(raw.target_train.y) < val.max()


def test_conformal_interval_covers_its_level_on_fresh_samples() -> None:
    rng = np.random.default_rng(0)
    noise = lambda n: rng.standard_t(4, n)   # heavy tails: no Gaussian assumption  # noqa: E731
    calibration, fresh = noise(2000), noise(5000)
    for level in (0.8, 0.9, 0.95):
        half = conformal_halfwidth(np.zeros((2000, 1)), calibration, level)
        coverage = float(np.mean(np.abs(fresh) <= half))
        assert abs(coverage - level) <= 0.02, (level, coverage)
    assert conformal_halfwidth(np.zeros((5, 1)), np.ones(5), 0.9) == float("inf")   # 5 samples cannot say 90%


def test_heldout_scores_a_regression_by_squared_error_and_r2() -> None:
    y = np.array([0.0, 1.0, 2.0, 3.0])
    held = HeldOut("val", np.array([[0.0], [1.0], [2.0], [4.0]]), y)
    assert held.regression and held.loss == pytest.approx(0.25)
    assert held.score == pytest.approx(1 - 0.25 / 1.25) and held.score_name == "r2"
    assert HeldOut.from_json(held.to_json()).y.dtype == np.float64


def test_losses_auto_choose_by_target_and_refuse_classification_losses_on_numbers() -> None:
    logits, numbers, classes = torch.tensor([[0.5], [1.5]]), torch.tensor([1.0, 1.0]), torch.tensor([0, 1])
    assert build_loss(LossConfig(), regression=True)(logits, numbers).item() == pytest.approx(0.25)
    assert build_loss(LossConfig(name="huber"), regression=True)(logits, numbers).item() == pytest.approx(0.125)
    two = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    assert build_loss(LossConfig())(two, classes).item() == pytest.approx(
        torch.nn.functional.cross_entropy(two, classes).item())
    assert message(build_loss, LossConfig(name="cross_entropy"), True) == (
        "loss.name: cross_entropy needs class labels, but the target is a number to predict (regression); "
        "accepted there: auto, mse, huber")


def test_val_acc_monitor_is_refused_for_a_regression() -> None:
    params = validate(small_params(finetune__early_stopping__monitor="val/acc", finetune__epochs=1,
                                   finetune__batch_size=4))
    data = TrainData(np.zeros((8, 3), np.float32), np.zeros(8, np.float32))
    model = build_model(ModelConfig(arch="mlp", width=4, depth=1), (3,), 1, "table")
    text = message(lambda: fit(model, data, data, params.finetune, params.trainer, seed=0))
    assert text.startswith("early_stopping.monitor: val/acc needs class labels")


# ------------------------------------------------------------------------------ auto choices
@pytest.mark.parametrize(("shape", "kind", "arch"), [
    ((24,), "series", "resnet1d"), ((12, 25), "series", "resnet1d"), ((8, 8), "image", "resnet2d"),
    ((1, 8, 8), "image", "resnet2d")])
def test_npz_kind_and_model_follow_the_sample_shape(tmp_path: Path, shape, kind, arch) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, *shape)).astype(np.float32), np.arange(40) % 2
    np.savez(tmp_path / "data.npz", x=x, y=y)
    raw = load_user_data(FileConfig(path=str(tmp_path / "data.npz")))
    assert (raw.kind, raw.task, raw.input_shape) == (kind, "classification", shape)
    model = build_model(ModelConfig(arch="auto", width=4, depth=1), shape, 2, raw.kind)
    assert model.config.arch == arch and model(torch.as_tensor(x[:2])).shape == (2, 2)


def test_a_table_gets_an_mlp() -> None:
    assert build_model(ModelConfig(), (9,), 3, "table").config.arch == "mlp"


def test_series_and_images_get_one_scale_per_channel_and_per_sample_z_normalises() -> None:
    rng = np.random.default_rng(0)
    series = rng.normal(5, 3, size=(10, 2, 30)).astype(np.float32) * np.array([1, 50], np.float32)[:, None]
    spec = fit_normalization(series, "auto", "series")
    assert spec["mode"] == "global" and np.asarray(spec["mean"]).shape == (2, 1)
    out = normalize(series, spec)
    np.testing.assert_allclose(out.mean(axis=(0, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2)), 1, atol=1e-4)
    assert out[:, 0].mean(axis=1).std() > 0.05     # each series keeps its own level
    out = normalize(series, fit_normalization(series, "per_sample", "series"))
    np.testing.assert_allclose(out.mean(axis=2), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=2), 1, atol=1e-4)
    images = rng.normal(size=(10, 3, 4, 4)).astype(np.float32) * np.array([1, 10, 100], np.float32)[:, None, None]
    spec = fit_normalization(images, "auto", "image")
    assert spec["mode"] == "global" and np.asarray(spec["mean"]).shape == (3, 1, 1)
    np.testing.assert_allclose(normalize(images, spec).std(axis=(0, 2, 3)), 1, atol=1e-4)


def test_the_old_standardize_key_says_what_to_write_instead() -> None:
    from trainlab.config.load import validate as validate_raw

    params = small_params()
    params["data"]["file"]["standardize"] = True
    assert message(validate_raw, params) == (
        "params.yaml: data.file: standardize was replaced by normalize: write normalize: per_feature for "
        "standardize: true (one mean/std per column), none for false, or auto (tables per column, series and "
        "images per channel)")
