"""The pyfunc every logged trainlab model is: rows of raw input values in, a labelled table out.

MLflow serves this class (`mlflow.pyfunc.load_model`, `mlflow models serve`). It wraps
the trained torch module and the input preparation prepare fitted (`inputs`: a table's
`ColumnTransformer`, or the normalisation of series and images; see
`trainlab.data.served_inputs`), so a prediction needs no training code and no prepared data:

- classification: class probabilities, temperature-scaled, one column per class name
  (`probs.idxmax(axis=1)` is the predicted class);
- regression: the prediction in the target's own unit and its conformal interval
  (`prediction`, `lower`, `upper`; the level is in the model's description);
- a pretext (masked-reconstruction) model: its raw outputs, one column per input value.

Input: for a table, a DataFrame of the raw columns (strings for categories, missing cells
allowed, ints or floats for numbers); for a model of an image folder, a column `image` of
encoded image files (PNG, JPEG, ...) as base64 text; for other series and images, rows of
the input values flattened (a 1-D signal as is, an image row by row), as a DataFrame, a
NumPy array or a list of lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import mlflow.pyfunc
import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class RegressionOutput:
    """How a regression model's standardised outputs become the target's unit, with an interval."""

    mean: float
    std: float
    halfwidth: float      # of the conformal interval, in the target's standard deviations
    level: float          # its nominal coverage


class ServedModel(mlflow.pyfunc.PythonModel):
    """Class probabilities (or a regression's prediction and interval) of a torch module, as a DataFrame."""

    def __init__(self, module: "torch.nn.Module", inputs: Callable[[Any], np.ndarray], columns: list[str],
                 temperature: float = 1.0, probabilities: bool = True,
                 regression: RegressionOutput | None = None):
        self.module = module
        self.inputs = inputs              # raw rows -> model input batch (trainlab.data.served_inputs)
        self.columns = [str(c) for c in columns]
        self.temperature = float(temperature)
        self.probabilities = probabilities
        self.regression = regression

    def load_context(self, context: Any) -> None:
        """Load what the inputs keep as artifacts (a table's fitted preprocessing, with skops)."""
        if hasattr(self.inputs, "load"):
            self.inputs.load(dict(getattr(context, "artifacts", None) or {}))

    # The type hints keep MLflow from warning that predict has none; the explicit
    # signature (logged_model.signature) is what its schema check enforces.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row per input row: probabilities under the class names, or prediction/lower/upper."""
        import torch

        x = self.inputs(model_input)
        self.module.eval()
        with torch.inference_mode():
            out = self.module(torch.from_numpy(np.ascontiguousarray(x))).float()
            if self.regression is not None:
                return self._regression(out[:, 0].double().numpy())
            if self.probabilities:
                # The same scaling as evaluate's: softmax(output / T), where output is a
                # single model's logits or an ensemble's log-probabilities.
                out = torch.softmax(out / self.temperature, dim=-1)
        return pd.DataFrame(out.double().numpy(), columns=self.columns)

    def _regression(self, standardised: np.ndarray) -> pd.DataFrame:
        r = self.regression
        prediction = standardised * r.std + r.mean
        half = r.halfwidth * r.std
        return pd.DataFrame({"prediction": prediction, "lower": prediction - half, "upper": prediction + half})
