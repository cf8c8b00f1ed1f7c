"""Self-supervised pretraining when a dataset brings no labelled corpus: masked reconstruction.

Without `data.file.source_path`, the source task holds the target train pool's inputs
and no labels (see `trainlab.data.build`). The backbone then learns to fill in masked
values: every input is shown in a few views with a random quarter of its values zeroed,
and the head regresses the whole unmasked input (mean squared error). Fine-tuning keeps
the backbone and replaces this head, so no label outside the budget, and no validation
or test sample, is ever seen before selection and evaluation.
"""

from __future__ import annotations

import numpy as np

from trainlab.config import TrainSpec
from trainlab.config.schema import LossConfig
from trainlab.data import TaskInfo
from trainlab.engine import TrainData

VIEWS = 4              # masked copies of each input per epoch's data
MASK_FRACTION = 0.25   # share of each input's values zeroed (inputs are standardized: 0 is the mean)


def masked_views(data: TrainData, seed: int) -> TrainData:
    """(masked input, whole input flattened) pairs: VIEWS per sample, masks drawn from `seed`."""
    x = np.asarray(data.x, dtype=np.float32)
    rng = np.random.default_rng(seed)
    repeated = np.repeat(x, VIEWS, axis=0)
    mask = rng.random(repeated.shape) < MASK_FRACTION
    return TrainData(np.where(mask, 0.0, repeated).astype(np.float32),
                     repeated.reshape(len(repeated), -1).copy())


def reconstruction_task(train: TrainData, val: TrainData, info: TaskInfo, seed: int
                        ) -> tuple[TrainData, TrainData, TaskInfo]:
    """The masked-reconstruction version of an unlabelled source task: one output per input value."""
    outputs = int(np.prod(info.input_shape))
    recon = TaskInfo(outputs, [f"value{i}" for i in range(outputs)], info.input_shape, info.kind, "regression")
    return masked_views(train, seed), masked_views(val, seed + 1), recon


def reconstruction_spec(spec: TrainSpec) -> TrainSpec:
    """The pretrain spec with the loss a regression target needs (val/loss monitored)."""
    stopping = spec.early_stopping.model_copy(update={"monitor": "val/loss"})
    return spec.model_copy(update={"loss": LossConfig(name="mse"), "early_stopping": stopping})
