"""bench/own_data.py and its zoo: the files are what they claim, the real run changes only
data.* keys, and --quick runs the whole pipeline end to end. No timing is asserted."""

from __future__ import annotations

import importlib.util
import math
import re
import sys

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
    assert float(cell["1-NN %"]) > 85 and float(cell["logreg %"]) > 85
    assert 0 <= float(cell["champion ECE"]) <= 1
    assert re.match(r"(yes|NO) \(\d+\.\d vs \d+\.\d\)$", cell["ensemble >= best member"])
    match = re.match(r"^ratio champion/best_classic_baseline \(worst dataset\) = (\d+\.\d+)$", lines[-1])
    assert match and math.isfinite(float(match[1])), lines[-1]
