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
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from mlflow.models import ModelInfo, ModelSignature

    from trainlab.tracking.model_card import Champion

EXAMPLE_ROWS = 2   # rows of the input example stored with each model


@dataclass(frozen=True)
class ModelSpec:
    """What a stage hands to tracking to log one trained model."""

    module: "torch.nn.Module"
    input_shape: tuple[int, ...]
    columns: list[str]               # class names; a pretext model's output names
    example: np.ndarray              # a few input rows, as the prepared data holds them
    temperature: float = 1.0         # its calibration: probabilities are softmax(output / T)
    probabilities: bool = True       # False for a pretext model: raw outputs, no softmax


def signature(spec: ModelSpec) -> "ModelSignature":
    """Unnamed `double` input columns (one per input value) -> one `double` column per class."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    width = int(np.prod(spec.input_shape))
    return ModelSignature(inputs=Schema([ColSpec("double") for _ in range(width)]),
                          outputs=Schema([ColSpec("double", str(name)) for name in spec.columns]))


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
    served = ServedModel(module, spec.input_shape, spec.columns, spec.temperature, spec.probabilities)
    example = np.asarray(spec.example[:EXAMPLE_ROWS], dtype=np.float32).reshape(-1, int(np.prod(spec.input_shape)))
    # MLflow warns that a Python object is saved with CloudPickle, on every log. The object
    # is our own module, loaded by its owners (as mlflow.pytorch pickles one); the DVC
    # file beside it loads without pickle. The warning would only bury the stage's output.
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    pyfunc_log.setLevel(logging.ERROR)
    try:
        return Model.log(None, name=name, flavor=mlflow.pyfunc, run_id=run_id, python_model=served,
                         signature=signature(spec), input_example=example, pip_requirements=requirements(),
                         registered_model_name=registered_model_name)
    finally:
        pyfunc_log.setLevel(level)


def register(client, run_id: str, spec: ModelSpec, name: str, alias: str, champion: "Champion") -> tuple[str, str]:
    """Log and register `spec`, describe the version (card, tags), point `alias` at it.
    Returns (version, model card)."""
    from trainlab.tracking.model_card import model_card, version_tags

    run_tags = client.get_run(run_id).data.tags
    info = log_model(run_id, spec, name, registered_model_name=name)
    version = str(info.registered_model_version)
    card = model_card(champion, run_id, run_tags, name, alias)
    client.update_model_version(name, version, description=card)
    for key, value in version_tags(champion, run_tags).items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, alias, version)
    return version, card


def _cpu_copy(module: "torch.nn.Module") -> "torch.nn.Module":
    """The module as served: on the CPU, in eval mode; the stage's own copy is left alone."""
    import copy

    return copy.deepcopy(module).cpu().eval()
