"""Logging a trained module as an MLflow model: pyfunc, signature, input example.

Every model a stage trains goes through `log_model` (and the champion through it with a
registry name): the run's Logged models tab lists it with its signature (input columns,
output columns named after the classes) and an input example. The model file DVC tracks
stays a plain run artifact beside it (`model/<file>.pt`), loadable without MLflow and
without pickle (`trainlab.ensemble.combine.load_any`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from trainlab.tracking.served_model import RegressionOutput

if TYPE_CHECKING:
    import torch
    from mlflow.models import ModelInfo, ModelSignature

    from trainlab.tracking.model_card import Champion


class Inputs(Protocol):
    """Raw rows -> the model's input batch (trainlab.data.served_inputs.ServedInputs)."""

    input_shape: tuple[int, ...]
    columns: list[tuple[str, str]] | None   # a table's raw columns and types ("double" | "string" | "any")
    image_column: str | None                # an image folder's model: the column of encoded image files
    resize: str | None                      # ... and how each image is fitted to input_shape
    artifacts: dict[str, str]               # files the served model loads in load_context

    def __call__(self, rows: Any) -> np.ndarray: ...

EXAMPLE_ROWS = 2   # rows of the input example stored with each model


@dataclass(frozen=True)
class ModelSpec:
    """What a stage hands to tracking to log one trained model."""

    module: "torch.nn.Module"
    inputs: Inputs
    columns: list[str]               # class names; a pretext model's output names
    example: Any                     # a few raw input rows (a table's as a DataFrame)
    temperature: float = 1.0         # its calibration: probabilities are softmax(output / T)
    probabilities: bool = True       # False for a pretext model: raw outputs, no softmax
    regression: RegressionOutput | None = None   # a regression: unit and interval of its outputs

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.inputs.input_shape


def signature(spec: ModelSpec) -> "ModelSignature":
    """Inputs: a table's named raw columns, or one unnamed column per input value (series,
    images). Outputs: one `double` column per class, or prediction/lower/upper for a regression.

    Numeric columns are declared `Any`, not `double`: MLflow's schema check refuses int64
    as `double` (an int64 array, a list of Python ints, a JSON row of integers: "Can not
    safely convert int64 to float64"; ints of at most 32 bits and 0/1 columns pass), and a
    null as `long`, and a number may come as either. The served model converts what it gets
    to float32 itself and refuses what is not a number in one line (data.served_inputs).
    The column count still says how many values a row has; the model's metadata
    (`input_shape`, `input`) says the rest. Every table column is optional: a missing one is
    a missing value, which the fitted preprocessing imputes."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    if spec.inputs.columns:
        inputs = Schema([ColSpec("string" if kind == "string" else AnyType(), name, required=False)
                         for name, kind in spec.inputs.columns])
    elif spec.inputs.image_column:   # a model of an image folder takes encoded files
        inputs = Schema([ColSpec("string", spec.inputs.image_column)])
    else:
        inputs = Schema([ColSpec(AnyType()) for _ in range(int(np.prod(spec.input_shape)))])
    names = ["prediction", "lower", "upper"] if spec.regression else spec.columns
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double", str(name)) for name in names]))


def input_metadata(spec: ModelSpec) -> dict[str, Any]:
    """What the signature's `Any` columns cannot say (the MLmodel file's `metadata`)."""
    if spec.inputs.columns:
        return {"input": "a table of the raw columns (DataFrame or JSON records); numbers as ints or floats"}
    if spec.inputs.image_column:
        return {"input_shape": list(spec.input_shape),
                "input": f"a column '{spec.inputs.image_column}' of encoded image files (PNG, JPEG, ...) as "
                         f"base64 text, each decoded and fitted to {list(spec.input_shape)} ({spec.inputs.resize}) "
                         f"as prepare did"}
    return {"input_shape": list(spec.input_shape),
            "input": f"rows of {int(np.prod(spec.input_shape))} numbers (ints or floats): each sample of shape "
                     f"{list(spec.input_shape)} flattened"}


def requirements() -> list[str]:
    """Pinned, not inferred: MLflow's inference loads the model in a subprocess (~8 s)."""
    import torch

    from trainlab import __version__

    return [f"torch=={torch.__version__.split('+')[0]}", f"trainlab=={__version__}", "pandas", "numpy"]


def log_model(run_id: str, spec: ModelSpec, name: str = "model",
              registered_model_name: str | None = None) -> "ModelInfo":
    """Log `spec` as an MLflow pyfunc model of run `run_id` (registered when a name is given)."""
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import Model

    from trainlab.tracking.served_model import ServedModel

    # MLflow files a logged model under the active experiment, not its run's: without
    # this it lands in "Default" (experiment 0), away from the run that logged it.
    mlflow.set_experiment(experiment_id=mlflow.MlflowClient().get_run(run_id).info.experiment_id)
    # Its check of the input example downloads the model again, with a progress bar on stderr.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    module = _cpu_copy(spec.module)
    served = ServedModel(module, spec.inputs, spec.columns, spec.temperature, spec.probabilities, spec.regression)
    example = spec.example[:EXAMPLE_ROWS]
    if not spec.inputs.columns and not spec.inputs.image_column:
        example = np.asarray(example, dtype=np.float32).reshape(-1, int(np.prod(spec.input_shape)))
    # MLflow warns that a Python object is saved with CloudPickle, on every log. The object
    # is our own module, loaded by its owners (as mlflow.pytorch pickles one); the DVC
    # file beside it loads without pickle. The warning would only bury the stage's output.
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    pyfunc_log.setLevel(logging.ERROR)
    try:
        return Model.log(None, name=name, flavor=mlflow.pyfunc, run_id=run_id, python_model=served,
                         signature=signature(spec), input_example=example, pip_requirements=requirements(),
                         metadata=input_metadata(spec),
                         artifacts=spec.inputs.artifacts or None, registered_model_name=registered_model_name)
    finally:
        pyfunc_log.setLevel(level)


@dataclass(frozen=True)
class Registered:
    """A registered version and the alias it got (`alias`, or `challenger`: see tracking.promotion)."""

    version: str
    alias: str
    why: str          # one line: why it took the alias, or why not
    card: str         # its description, the model card


def register(client, run_id: str, spec: ModelSpec, name: str, alias: str, champion: "Champion",
             promote: str = "auto", uri: str = "", root: Path | None = None) -> Registered:
    """Log and register `spec` as a new version, describe it (tags, model card), then let the
    promotion rule decide whether it takes `alias` or `challenger` (trainlab.tracking.promotion).

    All or nothing for Ctrl-C, and the calling stage's last lasting change: a Ctrl-C waits
    until the version is whole; one pressed before the alias moves deletes the new version
    again (no alias moved, no version without its tags) and ends the stage (exit 130); once
    the alias moved, the registration is committed and the stage finishes (exit 0).
    """
    from trainlab.processes import commit, raise_if_interrupted, signals_held
    from trainlab.tracking.model_card import model_card, version_tags
    from trainlab.tracking.promotion import CHALLENGER, settle

    raise_if_interrupted()   # a Ctrl-C that Python lost on the way here: register nothing
    cards: list[str] = []
    with signals_held() as held:
        run_tags = client.get_run(run_id).data.tags
        info = log_model(run_id, spec, name, registered_model_name=name)
        version = str(info.registered_model_version)
        for key, value in version_tags(champion, run_tags).items():
            client.set_model_version_tag(name, version, key, value)

        def describe(decision) -> bool:
            got = alias if decision.promote else CHALLENGER
            cards.append(model_card(champion, run_id, run_tags, name, got, version, decision.why))
            client.update_model_version(name, version, description=cards[-1])
            return not held

        decision = settle(client, uri or client.tracking_uri, root or Path.cwd(), name, version, alias, promote,
                          describe)
        if decision is None:
            client.delete_model_version(name, version)
        else:
            commit()
    if decision is None:   # leaving the block delivered the held Ctrl-C; in case its handler did not raise
        raise KeyboardInterrupt("registration given up: the new version is deleted again")
    return Registered(version, alias if decision.promote else CHALLENGER, decision.why, cards[-1])


def _cpu_copy(module: "torch.nn.Module") -> "torch.nn.Module":
    """The module as served: on the CPU, in eval mode; the stage's own copy is left alone."""
    import copy

    return copy.deepcopy(module).cpu().eval()
