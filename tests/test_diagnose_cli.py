"""`trainlab diagnose RUN_ID` on an MLflow run logged by another tool (Keras-style metric names)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from trainlab.testing import trainlab

from helpers.diagnose import OVERFIT_MIN_EPOCH, overfit_run

# what a Keras History callback logs for the engine's curves, one point per epoch
KERAS_NAMES = {"epoch/train_loss": "loss", "val/loss": "val_loss",
               "epoch/train_acc": "accuracy", "val/acc": "val_accuracy"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[MlflowClient, str, str, Path]:
    """(client, tracking URI, experiment id, folder) of a fresh sqlite store (created once: slow)."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("keras", artifact_location=(folder / "artifacts").as_uri())
    return client, uri, experiment, folder


@pytest.fixture
def foreign_run(store) -> tuple[MlflowClient, str, str]:
    """(client, tracking URI, run id) of a finished run whose val loss bottoms out at epoch 8 of 30."""
    client, uri, experiment, _ = store
    run_id = client.create_run(experiment, run_name="keras-fit").info.run_id
    metrics = [Metric(KERAS_NAMES[name], value, 1_700_000_000_000 + step, step)
               for name, points in overfit_run(seed=0).items() if name in KERAS_NAMES
               for step, value in points]
    client.log_batch(run_id, metrics=metrics)
    client.set_terminated(run_id)
    return client, uri, run_id


def test_diagnose_names_overfitting_and_leaves_the_run_alone(foreign_run, tmp_path):
    client, uri, run_id = foreign_run
    result = trainlab(["diagnose", run_id], tmp_path, MLFLOW_TRACKING_URI=uri)
    first, *details = result.stdout.splitlines()
    assert first == "diagnosis (keras-fit): overfitting"
    evidence = next(line for line in details if line.strip().startswith("- overfitting:"))
    onset = int(evidence.split(" in epoch ")[1].split()[0])
    assert abs(onset - (OVERFIT_MIN_EPOCH + 1)) <= 2   # logged at steps 0..29, told as epochs 1..30
    # without --log nothing is written to the run
    assert client.list_artifacts(run_id) == []
    assert "trainlab.diagnosis" not in client.get_run(run_id).data.tags


def test_diagnose_log_attaches_report_and_tag(foreign_run, tmp_path):
    client, uri, run_id = foreign_run
    result = trainlab(["diagnose", run_id, "--log"], tmp_path, MLFLOW_TRACKING_URI=uri)
    assert "overfitting" in result.stdout
    assert [a.path for a in client.list_artifacts(run_id)] == ["diagnosis.md"]
    assert client.get_run(run_id).data.tags["trainlab.diagnosis"] == "overfitting"
    report = Path(client.download_artifacts(run_id, "diagnosis.md", str(tmp_path))).read_text()
    assert report.startswith("# Training diagnosis")
    assert "**Verdict: 1 problem found** - `overfitting`." in report


def test_diagnose_unknown_run_is_one_line_exit_2(foreign_run, tmp_path):
    _, uri, _ = foreign_run
    result = trainlab(["diagnose", "0" * 32], tmp_path, check=False, MLFLOW_TRACKING_URI=uri)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"error: run {'0' * 32}: not found in {uri}"]
