"""What a served model does to raw input rows before its network sees them.

The same as prepare did to the training data: a table's fitted `ColumnTransformer`
(categories, missing cells, standardisation), the decoding and resizing of an image
folder's files (`IMAGE_COLUMN`: encoded image files, base64 in JSON), or the
normalisation of series and images.
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
# The one input column of a model trained on an image folder: each row one encoded image file.
IMAGE_COLUMN = "image"


class ServedInputs:
    """Raw rows -> the model's input batch (n, *input_shape), float32."""

    # A class default: a model logged before image folders were read unpickles without it.
    resize: str | None = None

    def __init__(self, input_shape: tuple[int, ...], normalization: dict[str, Any] | None = None,
                 columns: list[tuple[str, str]] | None = None, preprocessor_path: Path | None = None,
                 resize: str | None = None):
        self.input_shape = tuple(int(n) for n in input_shape)
        self.normalization = normalization
        self.columns = [tuple(c) for c in columns] if columns else None   # a table's (name, type)
        self.resize = resize   # a model of an image folder: rows are encoded files, fitted to input_shape so
        self.artifacts = {PREPROCESSOR_ARTIFACT: str(preprocessor_path)} if preprocessor_path else {}
        self._preprocessor: Any = None

    @property
    def image_column(self) -> str | None:
        """The input column of encoded image files (a model of an image folder), else None."""
        return IMAGE_COLUMN if self.resize else None

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

        if self.image_column:
            return normalize(self._decoded(rows), self.normalization)
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

    def _decoded(self, rows: Any) -> np.ndarray:
        """Each row's encoded image file (base64 text or bytes), decoded and resized as prepare did."""
        import base64
        import binascii

        from trainlab.data.image_folder import decode_image

        values = rows[IMAGE_COLUMN] if hasattr(rows, "columns") and IMAGE_COLUMN in rows.columns else rows
        values = list(np.asarray(values, dtype=object).reshape(-1))
        if not values:
            raise DataError(f"no input rows: send a column '{IMAGE_COLUMN}' of encoded image files (base64)")
        batch = np.empty((len(values), *self.input_shape), dtype=np.float32)
        for i, value in enumerate(values):
            try:
                data = value if isinstance(value, bytes) else base64.b64decode(str(value), validate=True)
            except (binascii.Error, ValueError):
                raise DataError(f"input row {i}: not base64 text of an image file") from None
            batch[i] = decode_image(data, self.input_shape, self.resize, f"input row {i}").reshape(self.input_shape)
        return batch
