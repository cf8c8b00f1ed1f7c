"""The prepare stage end to end: real `dvc repro prepare` and `trainlab prepare` in a throwaway project."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mnist1d.data import get_dataset_args, make_dataset
from sklearn.datasets import load_digits

from trainlab.data import load_split
from trainlab.testing import BIN, run, small_params, trainlab, write_params

pytestmark = pytest.mark.slow


def dvc(project: Path, *args: str) -> str:
    return run([str(BIN / "dvc"), *args], project).stdout


def manifest_of(project: Path) -> dict:
    return json.loads((project / "data" / "prepared" / "manifest.json").read_text())


def sizes(manifest: dict, task: str) -> dict[str, int]:
    return {split: info["num_samples"] for split, info in manifest["tasks"][task]["splits"].items()}


def run_statuses(project: Path) -> list[str]:
    with sqlite3.connect(project / "mlflow.db") as connection:
        return [row[0] for row in connection.execute("SELECT status FROM runs")]


def test_dvc_repro_prepare_then_up_to_date_until_data_params_change(project: Path) -> None:
    params = small_params()
    out = dvc(project, "repro", "prepare")
    assert "Running stage 'prepare'" in out

    manifest = manifest_of(project)
    pool = np.bincount(make_dataset(get_dataset_args())["y"])          # the paper's 4,000 train pool
    val = sum(max(1, round(params["data"]["val_fraction"] * c)) for c in pool)
    assert sizes(manifest, "target") == {"train": params["data"]["train_samples"], "val": val, "test": 1000}
    source = sizes(manifest, "source")
    assert source["train"] + source["val"] == params["data"]["source"]["num_samples"]
    assert manifest["input_shape"] == [40] and manifest["dataset"] == "mnist1d"
    train = load_split(project / "data" / "prepared", "target", "train")   # hashes check out
    assert train.x.shape == (params["data"]["train_samples"], 40)
    metrics = json.loads((project / "reports" / "prepare" / "metrics.json").read_text())
    # What `dvc metrics show` gets: the target's split sizes; every count is in the manifest.
    assert metrics == {"prepare/train_samples": params["data"]["train_samples"], "prepare/val_samples": val,
                       "prepare/test_samples": 1000}
    assert run_statuses(project) == ["FINISHED"]

    assert dvc(project, "status", "prepare", "--json").strip() == "{}"
    stamp = (project / "data" / "prepared" / "manifest.json").stat().st_mtime_ns
    again = dvc(project, "repro", "prepare")
    assert "Stage 'prepare' didn't change, skipping" in again
    assert "Running stage" not in again
    assert (project / "data" / "prepared" / "manifest.json").stat().st_mtime_ns == stamp
    assert run_statuses(project) == ["FINISHED"]                       # no second MLflow run

    # A section prepare does not read leaves it up to date...
    write_params(project, small_params(model__width=16))
    assert dvc(project, "status", "prepare", "--json").strip() == "{}"
    # ...the data section does not.
    write_params(project, small_params(data__split_seed=2))
    status = json.loads(dvc(project, "status", "prepare", "--json"))
    assert status == {"prepare": [{"changed deps": {"params.yaml": {"data": "modified"}}}]}


def test_trainlab_prepare_digits(project: Path) -> None:
    write_params(project, small_params(data__name="digits", data__train_samples=100))
    result = trainlab(["prepare"], project)
    assert "target/train/samples: 100" in result.stdout
    manifest = manifest_of(project)
    assert manifest["dataset"] == "digits" and manifest["input_shape"] == [8, 8]
    assert manifest["tasks"]["target"]["class_names"] == ["5", "6", "7", "8", "9"]
    assert manifest["tasks"]["source"]["class_names"] == ["0", "1", "2", "3", "4"]
    # Reference: sklearn's class counts, 20% of each target class to test, 10% of the rest to val.
    counts = np.bincount(load_digits().target)
    test = [max(1, round(0.2 * c)) for c in counts[5:]]
    val = [max(1, round(0.1 * (c - t))) for c, t in zip(counts[5:], test)]
    assert sizes(manifest, "target") == {"train": 100, "val": sum(val), "test": sum(test)}
    assert sum(sizes(manifest, "source").values()) == counts[:5].sum()
    assert run_statuses(project) == ["FINISHED"]


def test_trainlab_prepare_user_csv(project: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(["low", "mid", "high"], 30)
    frame = pd.DataFrame(rng.normal(size=(90, 5)), columns=[f"v{i}" for i in range(5)])
    frame["kind"] = labels
    frame.to_csv(project / "mine.csv", index=False)
    write_params(project, small_params(data__name="file", data__file__path="mine.csv", data__file__label="kind",
                                       data__train_samples=None, data__train_samples_per_class=10,
                                       data__file__kind="series", data__file__normalize="none"))   # rows traced by raw values
    trainlab(["prepare"], project)
    manifest = manifest_of(project)
    assert manifest["dataset"] == "file" and manifest["input_shape"] == [5]
    target = manifest["tasks"]["target"]
    assert target["class_names"] == ["high", "low", "mid"]
    # 30 per class: 6 to test (20%), 2 of the remaining 24 to val (10%), 10 kept for training.
    assert {split: info["class_counts"] for split, info in target["splits"].items()} == {
        "train": {"high": 10, "low": 10, "mid": 10},
        "val": {"high": 2, "low": 2, "mid": 2},
        "test": {"high": 6, "low": 6, "mid": 6},
    }
    test = load_split(project / "data" / "prepared", "target", "test")
    values = frame[[f"v{i}" for i in range(5)]].to_numpy(np.float32)
    file_rows = {row.tobytes(): kind for row, kind in zip(values, labels)}
    assert [file_rows[row.tobytes()] for row in test.x] == [target["class_names"][y] for y in test.y]
    assert run_statuses(project) == ["FINISHED"]
