"""A user's raw table through the real pipeline: `dvc repro` on strings and empty cells, a
number to predict, the served model answering raw rows, and an edited file rerunning prepare."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from trainlab.dvc_metrics import MAX_VALUES
from trainlab.testing import BIN, clean_env, dvc_metric_values, make_project, run, small_params

from helpers.tracking_server import Server, free_port
from test_user_tables import raw_table

pytestmark = pytest.mark.slow
TABLE = "data/own/table.csv"


def table_project(directory: Path, frame: pd.DataFrame, **overrides) -> Path:
    params = small_params(data__name="file", data__file__path=TABLE, data__train_samples=None, **overrides)
    project = make_project(directory / "project", params)
    frame.to_csv(project / TABLE, index=False)
    return project


def dvc(project: Path, *args: str) -> str:
    return run([str(BIN / "dvc"), *args], project).stdout


def reports(project: Path, name: str):
    return json.loads((project / "reports" / "evaluate" / name).read_text())


def test_editing_the_data_file_reruns_prepare_and_what_follows(tmp_path: Path) -> None:
    frame = raw_table()
    project = table_project(tmp_path, frame)
    assert "Running stage 'prepare'" in dvc(project, "repro", "prepare")
    assert json.loads(dvc(project, "status", "--json")).keys() >= {"pretrain"}   # downstream not yet run
    assert "prepare" not in json.loads(dvc(project, "status", "--json"))
    frame.loc[3, "label"] = "buys" if frame.loc[3, "label"] == "browses" else "browses"   # one cell
    frame.to_csv(project / TABLE, index=False)
    status = json.loads(dvc(project, "status", "--json"))
    assert status["prepare"][0]["changed deps"][TABLE] == "modified"
    assert "Running stage 'prepare'" in dvc(project, "repro", "prepare")


def test_a_raw_table_trains_and_the_served_model_answers_raw_rows(tmp_path: Path) -> None:
    project = table_project(tmp_path, raw_table(160))
    out = dvc(project, "repro")
    assert "columns: 2 numeric" in out and "'customer' (identifier: unique per row)" in out
    metrics = reports(project, "details.json")
    assert 0.0 <= metrics["champion/acc"] <= 1.0 and "test/acc/linear" in metrics
    shown = dvc_metric_values(project)            # what `dvc metrics show` shows: the headline
    assert len(shown) <= MAX_VALUES and shown["reports/evaluate/metrics.json:acc"] == metrics["champion/acc"]
    assert reports(project, "predictions.json") == []          # no regression panel for classes
    assert len(reports(project, "confusion.json")) > 0
    port, log = free_port(), tmp_path / "serve.log"
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", "models:/trainlab@champion", "--env-manager", "local",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(log, "w") as sink:
        process = subprocess.Popen(cmd, cwd=project, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                                   env=clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}"))
    server = Server(f"http://127.0.0.1:{port}", process)
    try:
        # A JSON row as a client sends it: an integer age, a missing income, a category as text.
        body = json.dumps({"dataframe_records": [{"age": 30, "income": None, "city": "Oslo", "member": True},
                                                 {"age": 61, "city": "Quito"}]}).encode()
        answer = post_when_up(server, log, body)
    finally:
        server.kill()
    rows = answer["predictions"]
    assert len(rows) == 2 and set(rows[0]) == {"browses", "buys"}
    assert all(abs(sum(row.values()) - 1.0) < 1e-6 for row in rows)


def post_when_up(server: Server, log: Path, body: bytes, limit_s: float = 240) -> dict:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"mlflow models serve exited:\n{log.read_text()[-3000:]}")
        request = urllib.request.Request(f"{server.uri}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{err.code}: {err.read().decode()[:2000]}") from None
        except OSError:
            time.sleep(1)
    raise AssertionError(f"mlflow models serve not up after {limit_s} s:\n{log.read_text()[-3000:]}")


def test_a_number_to_predict_is_scored_and_served_with_an_interval(tmp_path: Path) -> None:
    frame = raw_table(200).drop(columns=["label"])
    rng = np.random.default_rng(3)
    frame["price"] = 20.0 * frame["age"] + 300.0 * (frame["city"] == "Oslo") + rng.normal(0, 40, len(frame))
    project = table_project(tmp_path, frame, data__file__label="price", finetune__epochs=30)
    out = dvc(project, "repro")
    assert "regression of 'price'" in out and "test R2" in out
    metrics = reports(project, "details.json")
    for model in ("finetuned", "scratch", "linear", "best_trial", "ensemble"):
        assert {f"test/{m}/{model}" for m in ("r2", "rmse", "mae", "coverage")} <= metrics.keys()
    assert metrics["champion/interval_level"] == 0.9 and 0.0 <= metrics["champion/coverage"] <= 1.0
    assert metrics["test/r2/linear"] > 0.5          # a linear target: the linear model must find it
    shown = {key.split(":", 1)[1]: value for key, value in dvc_metric_values(project).items()
             if key.startswith("reports/evaluate/")}
    assert set(shown) == {"r2", "r2_low", "r2_high", "rmse", "coverage", "gain", "test/finetuned", "test/scratch",
                          "test/linear", "test/best_trial", "test/ensemble"}
    assert shown["test/linear"] == metrics["test/r2/linear"] and len(dvc_metric_values(project)) <= MAX_VALUES
    assert reports(project, "confusion.json") == [] and reports(project, "reliability.json") == []
    predicted = reports(project, "predictions.json")
    assert len(predicted) == 40 and {"actual", "predicted"} == set(predicted[0])
    assert (project / "reports/evaluate/artifacts/predictions_ensemble.png").is_file()
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model("models:/trainlab@champion")
    answer = served.predict(pd.DataFrame([{"age": 40, "income": 3e4, "city": "Oslo", "member": False}]))
    assert list(answer.columns) == ["prediction", "lower", "upper"]
    row = answer.iloc[0]
    assert row["lower"] < row["prediction"] < row["upper"]
    assert 700 < row["prediction"] < 1500            # 20 * 40 + 300 = 1100, in the target's own unit
