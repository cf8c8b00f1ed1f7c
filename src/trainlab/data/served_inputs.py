"""What a served model does to raw input rows before its network sees them.

The same as prepare did to the training data: a table's fitted `ColumnTransformer`
(categories, missing cells, standardisation), or the normalisation of series and images.
The served model (`trainlab.tracking.served_model`) holds a `ServedInputs` and calls it;
the fitted transformer travels as a skops file among the MLflow model's artifacts and is
loaded from there with skops (`load`), never unpickled: pickling a `ServedInputs` drops it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from trainlab.errors import DataError

PREPROCESSOR_ARTIFACT = "preprocessor"


class ServedInputs:
    """Raw rows -> the model's input batch (n, *input_shape), float32."""

    def __init__(self, input_shape: tuple[int, ...], normalization: dict[str, Any] | None = None,
                 columns: list[tuple[str, str]] | None = None, preprocessor_path: Path | None = None):
        self.input_shape = tuple(int(n) for n in input_shape)
        self.normalization = normalization
        self.columns = [tuple(c) for c in columns] if columns else None   # a table's (name, type)
        self.artifacts = {PREPROCESSOR_ARTIFACT: str(preprocessor_path)} if preprocessor_path else {}
        self._preprocessor: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # The fitted transformer is an artifact of its own, loaded with skops: never pickled.
        return {**self.__dict__, "_preprocessor": None}

    def load(self, artifacts: dict[str, str]) -> None:
        """Load the table's fitted preprocessing from the model's artifacts (skops, trusted types only)."""
        if self.columns and PREPROCESSOR_ARTIFACT in artifacts:
            from trainlab.data.tables import load_preprocessor

            self._preprocessor = load_preprocessor(Path(artifacts[PREPROCESSOR_ARTIFACT]))

    def __call__(self, rows: Any) -> np.ndarray:
        if self.columns:
            return self._table(rows)
        from trainlab.data.normalize import normalize

        try:   # ints or floats of any width: the signature's columns are `Any` (tracking.logged_model)
            x = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise DataError(f"input rows must hold numbers (ints or floats): {err}") from None
        width = int(np.prod(self.input_shape))
        if x.size % width:
            raise DataError(f"input rows of {x.shape[-1] if x.ndim else 1} values; this model takes {width} "
                            f"per row (samples of shape {list(self.input_shape)}, flattened)")
        return normalize(x.reshape(-1, *self.input_shape), self.normalization)

    def _table(self, rows: Any) -> np.ndarray:
        import pandas as pd

        from trainlab.data.tables import transform

        if self._preprocessor is None:
            raise DataError("the table's fitted preprocessing is not loaded (load the model with "
                            "mlflow.pyfunc.load_model, which loads its artifacts)")
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        unknown = [c for c in frame.columns if c not in {name for name, _ in self.columns}]
        if unknown:
            raise DataError(f"input column(s) {unknown[:5]} are not among the model's: "
                            f"{[name for name, _ in self.columns][:10]}")
        for name, kind in self.columns:
            if name not in frame:
                frame[name] = np.nan   # a column left out is a missing value in every row
            elif kind == "double":
                frame[name] = pd.to_numeric(frame[name], errors="raise")
        return transform(self._preprocessor, frame[[name for name, _ in self.columns]]).reshape(
            -1, *self.input_shape)
