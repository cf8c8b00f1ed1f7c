"""The pyfunc every logged trainlab model is: rows of input values in, a labelled table out.

MLflow serves this class (`mlflow.pyfunc.load_model`, `mlflow models serve`). It wraps
the trained torch module and returns class probabilities, temperature-scaled, one column
per class name, so a prediction reads without the training code: `probs.idxmax(axis=1)`
is the predicted class. A pretext (masked-reconstruction) model returns its raw outputs
instead, one column per reconstructed input value.

Input is a table of rows, each the model's input flattened (a 1-D signal as is, an image
row by row): a DataFrame, a NumPy array of any float or int dtype, or a list of lists.
The signature declares every column `double`, the widest type, so MLflow's schema check
lets float32, float64, ints and Python floats through (a float32 column would refuse
float64 input: "Failed to enforce schema"); predict casts to the module's float32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import torch


class ServedModel(mlflow.pyfunc.PythonModel):
    """Class probabilities (or a pretext model's outputs) of a torch module, as a DataFrame."""

    def __init__(self, module: "torch.nn.Module", input_shape: tuple[int, ...], columns: list[str],
                 temperature: float = 1.0, probabilities: bool = True):
        self.module = module
        self.input_shape = tuple(int(n) for n in input_shape)
        self.columns = [str(c) for c in columns]
        self.temperature = float(temperature)
        self.probabilities = probabilities

    # The type hints keep MLflow from warning that predict has none; the explicit
    # signature (logged_model.signature) is what its schema check enforces.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row per input row: probabilities summing to 1 under the class names."""
        import torch

        x = np.asarray(model_input, dtype=np.float32).reshape(-1, *self.input_shape)
        self.module.eval()
        with torch.inference_mode():
            out = self.module(torch.from_numpy(x)).float()
            if self.probabilities:
                # The same scaling as evaluate's: softmax(output / T), where output is a
                # single model's logits or an ensemble's log-probabilities.
                out = torch.softmax(out / self.temperature, dim=-1)
        return pd.DataFrame(out.double().numpy(), columns=self.columns)
