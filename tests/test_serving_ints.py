"""A served series/image model takes ints (issue 28, item 6): int64 arrays, lists of Python
ints, JSON rows of integers, as well as float32 and float64, and gives the float answer.

MLflow's schema check refused an unnamed `double` column of int64 ("Can not safely convert
int64 to float64"), so a row of ints failed before the model saw it; docs/mlflow.md and the model
card say ints are accepted. The model is logged as every stage logs one (log_model), loaded
with mlflow.pyfunc.load_model, and sent JSON through the scoring server's own request
handler (`mlflow models serve` runs it per request).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from trainlab.data.served_inputs import ServedInputs
from trainlab.errors import DataError
from trainlab.tracking.logged_model import ModelSpec, log_model

WIDTH = 6


class Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(WIDTH, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.flatten(1))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    import mlflow
    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = client.create_experiment("trainlab", artifact_location=str(folder / "mlruns"))
    run = client.create_run(experiment)
    spec = ModelSpec(Linear(), ServedInputs((WIDTH,)), ["a", "b", "c"], np.zeros((2, WIDTH), np.float32))
    info = log_model(run.info.run_id, spec)
    client.set_terminated(run.info.run_id)
    return mlflow.pyfunc.load_model(info.model_uri)


ROWS = [[0, 1, 2, 3, 4, 5], [5, -4, 3, -2, 1, 0]]


def expected() -> np.ndarray:
    with torch.inference_mode():
        return torch.softmax(Linear()(torch.tensor(ROWS, dtype=torch.float32)), -1).double().numpy()


@pytest.mark.parametrize("rows", [
    np.array(ROWS, dtype=np.int64),
    ROWS,                                              # lists of Python ints
    np.array(ROWS, dtype=np.int32),
    np.array(ROWS, dtype=np.float32),
    np.array(ROWS, dtype=np.float64),
    [[0, 1.0, 2, 3, 4, 5], [5, -4, 3, -2, 1, 0.0]],    # ints and floats mixed in a row
    pd.DataFrame(np.array(ROWS, dtype=np.int64)),
], ids=["int64", "list-of-ints", "int32", "float32", "float64", "mixed", "dataframe-int64"])
def test_served_model_takes_ints_and_floats(served, rows) -> None:
    probs = served.predict(rows)
    assert list(probs.columns) == ["a", "b", "c"]
    assert np.allclose(probs.to_numpy(), expected(), atol=1e-6)


def test_a_json_row_of_integers_is_served(served) -> None:
    from mlflow.pyfunc.scoring_server import invocations

    schema = served.metadata.get_input_schema()
    answer = invocations(json.dumps({"inputs": ROWS}), "application/json", served, schema)
    assert answer.status == 200, answer.response
    got = pd.DataFrame(json.loads(answer.response)["predictions"])[["a", "b", "c"]].to_numpy()
    assert np.allclose(got, expected(), atol=1e-6)


def test_the_signature_still_says_how_many_values_a_row_has(served) -> None:
    assert len(served.metadata.get_input_schema().inputs) == WIDTH
    assert served.metadata.metadata["input_shape"] == [WIDTH]


def test_what_is_not_a_row_of_numbers_is_refused(served) -> None:
    from mlflow.exceptions import MlflowException

    with pytest.raises(DataError, match=r"^input rows must hold numbers \(ints or floats\)"):
        served.predict([["a", "b", "c", "d", "e", "f"]])
    # The signature's column count is still checked by MLflow itself.
    with pytest.raises(MlflowException, match="declares 6 inputs"):
        served.predict(np.ones((2, 4), dtype=np.int64))
