"""What a served model is made of: the network, its input preparation, and its output's meaning.

`served_spec` gathers, for tracking to log as an MLflow model, the trained module, the
input preparation prepare fitted (`trainlab.data.served_inputs`), an input example of raw
rows, and what the outputs are: calibrated class probabilities, or a regression's
prediction in the target's unit with its conformal interval. A model of an image folder
takes encoded image files (base64 text in a column `image`), decoded and fitted to its
input size as prepare did (`trainlab.data.image_folder.decode_image`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from trainlab import paths
from trainlab.calibration import conformal_halfwidth
from trainlab.data import TaskInfo, load_split, read_manifest
from trainlab.data.prepared import PREPROCESSOR_NAME
from trainlab.data.served_inputs import IMAGE_COLUMN, ServedInputs
from trainlab.heldout import HeldOut
from trainlab.tracking.logged_model import EXAMPLE_ROWS, ModelSpec
from trainlab.tracking.served_model import RegressionOutput


def served_inputs(info: TaskInfo) -> ServedInputs:
    """The prepared data's input preparation, to apply to raw rows."""
    inputs = read_manifest(paths.PREPARED).get("inputs", {})
    table = inputs.get("preprocessor") is not None
    return ServedInputs(info.input_shape, inputs.get("normalization"), inputs.get("columns"),
                        paths.PREPARED / PREPROCESSOR_NAME if table else None,
                        (inputs.get("image") or {}).get("resize"))


def served_spec(module: torch.nn.Module, info: TaskInfo, task: str, temperature: float = 1.0,
                probabilities: bool = True, heldout: HeldOut | None = None, level: float = 0.9) -> ModelSpec:
    """What tracking needs to log `module` as an MLflow model. A regression model's interval
    is fitted on `heldout` (its held-out predictions) at `level`."""
    inputs = served_inputs(info)
    regression = None
    if info.regression and probabilities:
        halfwidth = conformal_halfwidth(heldout.outputs, heldout.y, level) if heldout is not None else float("inf")
        mean, std = info.target_scale or (0.0, 1.0)
        regression = RegressionOutput(mean, std, halfwidth, level)
    return ModelSpec(module, inputs, list(info.class_names), _example(task), temperature, probabilities, regression)


def _example(task: str) -> Any:
    """A few raw rows: what prepare kept of the file (a table's as a DataFrame), else the first
    rows of `task`'s training split (built-in data, stored as it is generated)."""
    inputs = read_manifest(paths.PREPARED).get("inputs", {})
    example = inputs.get("example")
    if example and inputs.get("image"):   # an image folder's: the first training images, as PNG files
        import pandas as pd

        from trainlab.data.image_folder import encode_png

        return pd.DataFrame({IMAGE_COLUMN: [encode_png(np.asarray(image, dtype=np.uint8))
                                            for image in example[:EXAMPLE_ROWS]]})
    if example and isinstance(example[0], dict):
        import pandas as pd

        return pd.DataFrame(example[:EXAMPLE_ROWS])
    if example:
        return np.asarray(example[:EXAMPLE_ROWS], dtype=np.float32)
    return np.array(load_split(paths.PREPARED, task, "train", mmap=True).x[:EXAMPLE_ROWS])
