"""bench/own_data.py and its zoo: the files are what they claim, the real run changes only
data.* keys, the classic baselines agree with hand-built references and take the raw
columns (strings, NA cells, dates), the tables read both classification and regression
reports, and --quick runs the whole pipeline end to end. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from trainlab.testing import BIN, ROOT, run

BENCH = ROOT / "bench"
ZOO = BENCH / "zoo"


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module   # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


own_data = load(BENCH / "own_data.py", "bench_own_data")
convert = load(ZOO / "convert.py", "bench_zoo_convert")
B = own_data.B   # bench/zoo/baselines.py, as own_data imports it


@pytest.mark.parametrize("name", convert.SKLEARN_SETS)
def test_sklearn_csvs_are_what_convert_writes_from_sklearn(name, tmp_path):
    from sklearn import datasets

    made = convert.sklearn_csv(name, tmp_path / f"{name}.csv")
    assert made.read_bytes() == (ZOO / f"{name}.csv").read_bytes()
    frame = pd.read_csv(ZOO / f"{name}.csv")
    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    np.testing.assert_array_equal(frame.drop(columns=["label", "split"]).to_numpy(), x)
    np.testing.assert_array_equal(frame["label"], y)
    test = frame["split"] == "test"
    assert set(frame["split"]) == {"train", "test"}
    assert abs(test.mean() - 0.25) < 0.01
    # stratified: every class keeps its share in the test split (within one sample)
    for label, count in frame["label"].value_counts().items():
        assert abs((frame["label"][test] == label).sum() - 0.25 * count) <= 1


@pytest.mark.parametrize("name, n_train, n_test, shape, classes", [
    ("trace", 100, 100, (275,), 4),
    ("japanese_vowels", 270, 370, (12, 25), 9),
    ("unit_test", 20, 22, (24,), 2),
])
def test_series_npz_keep_the_package_split(name, n_train, n_test, shape, classes):
    arrays = np.load(ZOO / f"{name}.npz", allow_pickle=False)
    assert arrays["x_train"].shape == (n_train, *shape) and arrays["x_test"].shape == (n_test, *shape)
    assert len(np.unique(arrays["y_train"])) == classes
    assert set(np.unique(arrays["y_test"])) <= set(np.unique(arrays["y_train"]))
    assert np.isfinite(arrays["x_train"]).all() and np.isfinite(arrays["x_test"]).all()


def test_ts_reader_reads_channels_and_labels(tmp_path):
    path = tmp_path / "tiny.ts"
    path.write_text("# comment\n@problemName tiny\n@classLabel true a b\n@data\n"
                    "1,2,3:4,5,6:a\n7,8,9:10,11,12:b\n")
    x, y = convert.read_ts(path)
    assert x.shape == (2, 2, 3) and x[1, 1, 2] == 12 and list(y) == ["a", "b"]


@pytest.fixture(scope="module")
def vega_packages():
    """The site-packages holding vega_datasets (a test and bench extra; trainlab itself does not use it)."""
    import vega_datasets as vega   # in the test extra
    return Path(vega.__file__).resolve().parents[1]


def test_diabetes_csv_is_sklearns_raw_diabetes_with_a_shuffled_split(tmp_path):
    from sklearn.datasets import load_diabetes

    assert convert.diabetes_csv(tmp_path / "diabetes.csv").read_bytes() == (ZOO / "diabetes.csv").read_bytes()
    frame = pd.read_csv(ZOO / "diabetes.csv")
    x, y = load_diabetes(scaled=False, return_X_y=True)
    assert list(frame.columns) == ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6", "target", "split"]
    np.testing.assert_array_equal(frame.drop(columns=["target", "split"]).to_numpy(), x)
    np.testing.assert_array_equal(frame["target"], y)
    assert (frame["split"] == "test").sum() == 111 and (frame["split"] == "train").sum() == 331


@pytest.mark.parametrize("name, source, label, rows, na", [
    ("cars", "cars.json", "Origin", 406, {"Miles_per_Gallon": 8, "Horsepower": 6}),
    ("seattle_weather", "seattle-weather.csv", "weather", 1461, {}),
])
def test_vega_csvs_are_the_packages_tables_as_shipped(name, source, label, rows, na, vega_packages, tmp_path):
    made = convert.vega_csv(vega_packages, name, tmp_path / f"{name}.csv")
    assert made.read_bytes() == (ZOO / f"{name}.csv").read_bytes()
    path = vega_packages / convert.VEGA_DATA / source
    frame = pd.read_csv(ZOO / f"{name}.csv")
    if path.suffix == ".json":   # the same records, NA cells included
        shipped = pd.DataFrame(json.loads(path.read_text()))
        pd.testing.assert_frame_equal(frame.drop(columns="split"), shipped, check_dtype=False)
    else:                        # the same text in every cell
        lines = (ZOO / f"{name}.csv").read_text().splitlines()
        assert [line.rsplit(",", 1)[0] for line in lines] == path.read_text().splitlines()
    assert len(frame) == rows and {c: n for c, n in frame.isna().sum().items() if n} == na
    test = frame["split"] == "test"
    assert abs(test.mean() - 0.25) < 0.01
    for value, count in frame[label].value_counts().items():   # stratified on the class column
        assert abs((frame[label][test] == value).sum() - 0.25 * count) <= 1


def test_the_new_tables_name_their_label_and_leave_the_task_to_the_pipeline():
    sets = {d.name: d for d in own_data.ZOO_SETS}
    for name, label, task in [("diabetes", "target", "regression"), ("cars", "Origin", "classification"),
                              ("cars_mpg", "Miles_per_Gallon", "regression"),
                              ("seattle_weather", "weather", "classification")]:
        overrides = sets[name].data_overrides()
        assert sets[name].task == task and sets[name].table
        assert overrides["data.file.label"] == label and overrides["data.file.split_column"] == "split"
        assert "data.file.task" not in overrides and "data.file.kind" not in overrides


def test_read_table_leaves_out_unlabelled_rows_and_turns_dates_into_days():
    x, y, x_test, y_test = B.read_table(ZOO / "cars.csv", "Miles_per_Gallon")
    assert (len(y), len(y_test)) == (300, 98) and y.notna().all() and y_test.notna().all()
    assert "Miles_per_Gallon" not in x and "split" not in x
    assert x["Year"].dtype == np.float64 and x["Year"].min() == 0.0   # 1970-01-01: day 0
    assert x["Horsepower"].isna().sum() + x_test["Horsepower"].isna().sum() == 6
    assert B.categorical_columns(x) == ["Name", "Origin"]


def test_dates_as_days_takes_only_columns_that_are_all_dates():
    frame = pd.DataFrame({"day": ["2012/01/01", "2012/01/31", None], "month": ["March", "May", "June"],
                          "mixed": ["2012-01-01", "soon", "2012-01-03"], "n": [1.0, 2.0, 3.0],
                          "flag": [True, False, True]})
    out = B.dates_as_days(frame)
    np.testing.assert_array_equal(out["day"], [15340.0, 15370.0, np.nan])
    for column in ("month", "mixed", "n", "flag"):
        pd.testing.assert_series_equal(out[column], frame[column])


def test_table_baselines_on_numbers_match_the_plain_sklearn_models():
    """No string, no NA: the standard preprocessing is a StandardScaler, nothing else."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.metrics import r2_score
    from sklearn.preprocessing import StandardScaler

    x, y, x_test, y_test = B.read_table(ZOO / "wine.csv", "label")
    scaler = StandardScaler().fit(x)
    got = B.table_baselines(x, y, x_test, y_test, "classification")
    assert got["linear"].score == LogisticRegression(max_iter=5000).fit(scaler.transform(x), y).score(
        scaler.transform(x_test), y_test)
    assert got["knn"].score == KNeighborsClassifier(5).fit(scaler.transform(x), y).score(scaler.transform(x_test), y_test)
    assert B.best(got).score == max(b.score for b in got.values())

    x, y, x_test, y_test = B.read_table(ZOO / "diabetes.csv", "target")
    got = B.table_baselines(x, y, x_test, y_test, "regression")
    scaler = StandardScaler().fit(x)
    ridge = Ridge().fit(scaler.transform(x), y).predict(scaler.transform(x_test))
    knn = KNeighborsRegressor(5).fit(scaler.transform(x), y).predict(scaler.transform(x_test))
    assert got["linear"].score == pytest.approx(r2_score(y_test, ridge), abs=1e-12)
    assert got["linear"].rmse == pytest.approx(np.sqrt(np.mean((ridge - y_test) ** 2)), rel=1e-12)
    assert got["knn"].score == pytest.approx(r2_score(y_test, knn), abs=1e-12)
    assert {b.model for b in got.values()} == {"ridge", "5-NN", "HGB"}


def test_table_baselines_take_strings_missing_cells_and_unseen_values():
    """The class is the string column; NA cells and a value seen only in the test rows must not break any model."""
    rng = np.random.default_rng(0)
    colour = rng.choice(["red", "green", "blue"], 300).astype(object)
    x = pd.DataFrame({"colour": pd.array(colour, dtype="str"), "noise": rng.normal(size=300),
                      "flag": rng.random(300) < 0.5})
    x.loc[::7, "noise"] = np.nan
    y = pd.Series(np.where(colour == "red", "warm", "cold"))
    x_test = pd.DataFrame({"colour": pd.array(["red", "green", "blue", "violet", None], dtype="str"),
                           "noise": [0.0, np.nan, 1.0, 0.0, 0.0], "flag": [True, False, True, False, True]})
    y_test = pd.Series(["warm", "cold", "cold", "cold", "cold"])
    got = B.table_baselines(x, y, x_test, y_test, "classification")
    # the three seen colours are right for every model; violet and the NA cell are free guesses
    assert all(b.score >= 0.6 for b in got.values()), got


def test_as_categories_keeps_the_most_frequent_values_hgb_accepts():
    values = [f"v{i:03d}" for i in range(300)] + ["v299"] * 5   # v299 most frequent, 299 others once
    x = pd.DataFrame({"name": pd.array(values, dtype="str"), "n": np.arange(305.0)})
    x_test = pd.DataFrame({"name": pd.array(["v299", "never"], dtype="str"), "n": [0.0, 1.0]})
    cats, cats_test = B.as_categories(x, x_test)
    assert len(cats["name"].cat.categories) == B.HGB_MAX_CATEGORIES and "v299" in cats["name"].cat.categories
    assert cats_test["name"].isna().tolist() == [False, True] and cats["n"].dtype == np.float64
    from sklearn.ensemble import HistGradientBoostingRegressor   # it accepts the capped column

    HistGradientBoostingRegressor(categorical_features="from_dtype", max_iter=5).fit(cats, np.arange(305.0))


def write_report(project: Path, metrics: dict, monkeypatch, champion: str) -> Path:
    (project / "reports" / "evaluate").mkdir(parents=True)
    (project / "reports" / "evaluate" / "details.json").write_text(json.dumps(metrics))
    monkeypatch.setattr(own_data, "champion_name", lambda _: champion)
    return project


REGRESSION_METRICS = {"test/r2/ensemble": 0.91, "test/r2/ensemble_member_best": 0.90, "test/r2/finetuned": 0.90,
                      "test/rmse/ensemble": 2.5, "test/mae/ensemble": 1.9, "test/coverage/ensemble": 0.89,
                      "champion/r2": 0.91, "champion/rmse": 2.5, "champion/mae": 1.9, "champion/coverage": 0.89,
                      "champion/interval_level": 0.9}


def test_a_regression_report_fills_the_regression_row(tmp_path, monkeypatch):
    project = write_report(tmp_path, REGRESSION_METRICS, monkeypatch, "ensemble")
    row = own_data.Row("cars_mpg", "regression", n_test=98,
                       baselines={"linear": B.Baseline("ridge", 0.81, 3.5), "hgb": B.Baseline("HGB", 0.93, 2.3)})
    own_data.read_results(project, row)
    assert (row.score, row.rmse, row.coverage, row.interval_level) == (0.91, 2.5, 0.89, 0.9) and not row.missing
    assert row.models == {"ensemble": 0.91, "finetuned": 0.90} and row.ensemble_vs_best == "yes (0.910 vs 0.900)"
    assert own_data.verdict(row) is True   # 0.91 >= 0.93 - 0.02
    cells = dict(zip(own_data.REGRESSION_HEADER, own_data.regression_rows([row])[0]))
    assert cells["champion test R² (model)"] == "0.910 (ensemble)" and cells["HGB R² (RMSE)"] == "0.930 (2.3)"
    assert cells["best classic baseline R² (model)"] == "0.930 (HGB)"
    assert cells["champion interval coverage (nominal)"] == "0.890 (0.90)"
    row.score = 0.9099
    assert own_data.verdict(row) is False
    assert own_data.worst_margin([row]) == pytest.approx(0.9099 - 0.93)


def test_a_missing_key_shows_in_the_row_and_a_wrong_task_is_one_line(tmp_path, monkeypatch):
    metrics = {k: v for k, v in REGRESSION_METRICS.items() if k != "champion/coverage"}
    project = write_report(tmp_path / "a", metrics, monkeypatch, "ensemble")
    row = own_data.Row("diabetes", "regression")
    own_data.read_results(project, row)
    assert row.missing == ["champion/coverage"] and row.coverage is None
    assert own_data.champion_text(row) == "0.910 (ensemble); missing: champion/coverage"

    project = write_report(tmp_path / "b", {"test/acc/mlp": 0.5, "test/ece/mlp": 0.1}, monkeypatch, "mlp")
    with pytest.raises(RuntimeError, match="scored this regression set as classification"):
        own_data.read_results(project, own_data.Row("diabetes", "regression"))


@pytest.mark.parametrize("n_test, champion, ok", [(38, 0.95, True), (1000, 0.95, False), (1000, 0.965, True)])
def test_the_classification_verdict_allows_one_point_or_one_test_sample(n_test, champion, ok):
    row = own_data.Row("x", n_test=n_test, score=champion, baselines={"hgb": B.Baseline("HGB", 0.974)})
    assert own_data.verdict(row) is ok   # slack max(0.01, 1/38 = 0.026)


def test_baselines_only_prints_every_tables_baselines_without_the_pipeline():
    result = run([str(BIN / "python"), "bench/own_data.py", "--baselines-only", "--only", "iris,cars_mpg"], ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {r["dataset"]: r for r in (dict(zip(header, (c.strip() for c in l.strip("|").split("|")))) for l in lines[1:])}
    assert rows["iris"]["train(+val)/test"] == "112/38" and rows["iris"]["classes"] == "3"
    assert float(rows["iris"]["logreg / ridge"]) > 85
    assert rows["cars_mpg"]["task"] == "regression" and rows["cars_mpg"]["train(+val)/test"] == "300/98"
    assert re.fullmatch(r"0\.\d{3} \(\d+\.\d+\)", rows["cars_mpg"]["HGB"])
    assert "dvc repro" not in result.stdout


def test_the_real_run_changes_only_data_keys():
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dataset in own_data.ZOO_SETS:
        params = own_data.C.real_params(**dataset.data_overrides())
        assert all(key.startswith("data.") for key in dataset.data_overrides())
        assert {k: v for k, v in params.items() if k != "data"} == {k: v for k, v in shipped.items() if k != "data"}
        if dataset.file:
            assert (ZOO / dataset.file).is_file()
            assert params["data"]["name"] == "file" and params["data"]["train_samples"] is None


def test_unknown_dataset_is_one_clear_line():
    result = run([str(BIN / "python"), "bench/own_data.py", "--only", "iris,nosuch"], ROOT, check=False)
    assert result.returncode == 2
    assert "unknown dataset(s) ['nosuch']" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_quick_runs_the_pipeline_and_prints_the_table():
    result = run([str(BIN / "python"), "bench/own_data.py", "--quick"], ROOT)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert any(line.startswith("# cpu: ") for line in lines), result.stdout[:2000]
    row = next(line for line in lines if line.startswith("| iris "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    header = [c.strip() for c in next(l for l in lines if l.startswith("| dataset ")).strip("|").split("|")]
    cell = dict(zip(header, cells))
    assert cell["train+val/test"] == "100+12/38" and cell["classes"] == "3"
    champion = re.fullmatch(r"(\d+\.\d) \((\w+)\)", cell["champion test acc % (model)"])
    assert champion, row
    # the champion's accuracy is the one listed for that model among all models
    assert f"{champion[2]} {champion[1]}" in cell["all models test acc %"]
    # iris is easy for the classic baselines: computed wrongly (labels misaligned), they would not be
    assert float(cell["k-NN %"]) > 85 and float(cell["logreg %"]) > 85 and float(cell["HGB %"]) > 85
    assert re.fullmatch(r"(yes|NO) \(\d+\.\d vs \d+\.\d\)", cell["champion >= best - max(1 pt, 1 test sample)"])
    assert 0 <= float(cell["champion ECE"]) <= 1
    assert re.match(r"(yes|NO) \(\d+\.\d vs \d+\.\d\)$", cell["ensemble >= best member"])
    match = re.match(r"^ratio champion/best_classic_baseline \(worst dataset\) = (\d+\.\d+)$", lines[-1])
    assert match and math.isfinite(float(match[1])), lines[-1]


# ------------------------------------------------------------------ issue 26: digits28 as a PNG folder
def test_digits28_folder_holds_the_npz_images_as_png_files_in_the_same_split(tmp_path):
    from PIL import Image

    npz, folder = own_data.write_digits28_routes(tmp_path, n=80)
    arrays = np.load(npz, allow_pickle=False)
    assert sorted(arrays.files) == ["x_test", "x_train", "y_test", "y_train"]
    assert len(arrays["y_train"]) + len(arrays["y_test"]) == 80 and arrays["x_train"].shape[1:] == (28, 28)
    # the split prepare would draw from an x/y NPZ (test_fraction 0.2, stratified, seed 0)
    x, y = own_data.digits28_arrays(80)
    from trainlab.data.splits import stratified_split

    train, test = stratified_split(y, 0.2, 0, "digits28")
    assert sorted(map(tuple, arrays["x_test"].reshape(len(test), -1))) == sorted(map(tuple, x[test].reshape(len(test), -1)))
    assert sorted(p.name for p in folder.iterdir()) == ["test", "train"]
    for split in ("train", "test"):
        classes = sorted((p for p in (folder / split).iterdir()), key=lambda p: int(p.name))
        assert {p.name for p in classes} == {str(c) for c in np.unique(arrays[f"y_{split}"])}
        # listed by class, then file name: the NPZ's order, image for image
        files = [f for c in classes for f in sorted(c.iterdir())]
        assert all(f.suffix == ".png" for f in files) and len(files) == len(arrays[f"y_{split}"])
        assert [int(f.parent.name) for f in files] == arrays[f"y_{split}"].tolist()
        decoded = []
        for f in files:
            with Image.open(f) as image:
                assert image.mode == "L" and image.size == (28, 28)
                decoded.append(np.asarray(image))
        values = arrays[f"x_{split}"]
        np.testing.assert_array_equal(np.stack(decoded), own_data.as_gray_levels(values))
        # 0..16 -> 0..255: at most half a gray level from the float value
        assert np.abs(np.stack(decoded) - values * 255 / 16).max() <= 0.5 + 1e-4


def test_both_routes_prepare_the_same_samples_up_to_8_bit_rounding(tmp_path):
    npz, folder = own_data.write_digits28_routes(tmp_path, n=120)
    roots = []
    for dataset in own_data.folder_datasets(tmp_path):
        params = own_data.C.real_params(**{**dataset.data_overrides(), "data.file.path": str(tmp_path / dataset.file)})
        roots.append(own_data.C.prepare_data(tmp_path / f"project-{dataset.name}", params) / "data" / "prepared")
    ok, worst, line = own_data.prepared_agree(*roots)
    assert ok, line
    assert 0.3 < worst <= 0.5 + 1e-3   # quantised for real, never by more than half a level
    manifest = json.loads((roots[1] / "manifest.json").read_text())
    assert any("the folder's own train/test split" in note for note in manifest["notes"])


def test_folder_check_refuses_only_and_baselines_only():
    result = run([str(BIN / "python"), "bench/own_data.py", "--folder-check", "--only", "iris"], ROOT, check=False)
    assert result.returncode == 2 and "--folder-check runs its own two datasets" in result.stderr


def test_same_code_names_what_differs_between_the_two_projects_outside_data_keys(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name / "src" / "pkg").mkdir(parents=True)
        (tmp_path / name / "stages").mkdir()
        (tmp_path / name / "src" / "pkg" / "m.py").write_text("x = 1\n")
        (tmp_path / name / "dvc.yaml").write_text("stages: {}\n")
        (tmp_path / name / "params.yaml").write_text(yaml.safe_dump({"data": {"name": name}, "model": {"width": 32}}))
    a, b = tmp_path / "a", tmp_path / "b"
    assert own_data.same_code(a, b) == []   # data.* may differ: the routes' own keys
    (b / "src" / "pkg" / "m.py").write_text("x = 2\n")
    (b / "params.yaml").write_text(yaml.safe_dump({"data": {"name": "b"}, "model": {"width": 8}}))
    assert own_data.same_code(a, b) == ["src/pkg/m.py", "params.yaml (outside data.*)"]


def test_a_code_snapshot_gives_every_project_its_code_and_params(tmp_path, monkeypatch):
    snapshot = own_data.snapshot_checkout(tmp_path / "code")
    marker = "# the snapshot's own line\n"
    (snapshot / "src" / "trainlab" / "__init__.py").write_text(
        (snapshot / "src" / "trainlab" / "__init__.py").read_text() + marker)
    shipped = yaml.safe_load((snapshot / "params.yaml").read_text())
    shipped["seed"] = 12345
    (snapshot / "params.yaml").write_text(yaml.safe_dump(shipped, sort_keys=False))
    monkeypatch.setattr(own_data, "CODE_SNAPSHOT", snapshot)
    dataset = next(d for d in own_data.ZOO_SETS if d.name == "iris")
    project = own_data.new_project(dataset, tmp_path, quick=False)
    assert (project / "src" / "trainlab" / "__init__.py").read_text().endswith(marker)
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["seed"] == 12345 and params["data"]["file"]["path"] == "zoo/iris.csv"
    status = run(["git", "status", "--porcelain"], project).stdout
    assert status == "", status   # committed: dvc sees a clean project
    assert own_data.same_code(project, project) == []
