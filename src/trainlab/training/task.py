"""Train a model on one task of the prepared data: what pretrain, finetune and search share.

`train_source` pretrains on the source task (labelled, or by masked reconstruction when
the source holds inputs only); `train_target` trains on the target task and leaves the
held-out predictions every later choice is made on: the validation split's, or under
cross-validation the pooled out-of-fold ones.
"""

from __future__ import annotations

import numpy as np

from trainlab import paths
from trainlab.data import TaskInfo, load_split, read_manifest, task_info
from trainlab.engine import TrainData, seed_everything
from trainlab.config import Params
from trainlab.heldout import HeldOut, predict_outputs
from trainlab.models import build_model
from trainlab.training.cross_validation import cross_validated
from trainlab.training.fit import ModelFactory, TrainedModel, TrainRequest, fit_model
from trainlab.training.folds import uses_cv
from trainlab.training.lr_choice import measured_lr
from trainlab.training.pretext import reconstruction_spec, reconstruction_task

TaskData = tuple[TrainData, TrainData, TaskInfo]


def load_task(task: str, params: Params) -> TaskData:
    """Train and val splits of `task` ("source" or "target"), memory-mapped when the DataLoader path is chosen."""
    mmap = params.trainer.loader == "dataloader"
    train = load_split(paths.PREPARED, task, "train", mmap=mmap)
    val = load_split(paths.PREPARED, task, "val", mmap=mmap)
    return TrainData(train.x, train.y), TrainData(val.x, val.y), task_info(paths.PREPARED, task)


def source_is_labelled() -> bool:
    """False when the source task is the target pool's inputs without labels (see prepare)."""
    return bool(read_manifest(paths.PREPARED).get("source_labelled", True))


def train_source(request: TrainRequest) -> TrainedModel:
    """Pretraining: a fresh model on the source task, or masked reconstruction without labels."""
    train, val, info = load_task("source", request.params)
    if not source_is_labelled():
        return _pretext(request, train, val, info)
    return _fit_measured(request.budgeted(len(train), info.kind), fresh_model(request.params, info), train, val, info)


def train_target(request: TrainRequest, build: ModelFactory | None = None, data: TaskData | None = None) -> TrainedModel:
    """Build a model and fit it on the target task, resuming from its checkpoint if one fits.

    With a validation split below `selection.cv_below`, the model is selected by
    cross-validation and refit (`trainlab.training.cross_validation`). Resume checkpoints
    are removed by the caller once the final outputs are written (`finish`).
    """
    train, val, info = data or load_task("target", request.params)
    build = build or fresh_model(request.params, info)
    if uses_cv(request.params, len(val)):
        return cross_validated(request, build, train, val, info)
    fitted = _fit_measured(request.budgeted(len(train), info.kind), build, train, val, info)
    fitted.heldout = HeldOut("val", predict_outputs(fitted.model, val.x, info.regression), np.asarray(val.y))
    return fitted


def _pretext(request: TrainRequest, train: TrainData, val: TrainData, info: TaskInfo) -> TrainedModel:
    """Masked-reconstruction pretraining on unlabelled inputs (see `trainlab.training.pretext`)."""
    train, val, info = reconstruction_task(train, val, info, request.params.seed)
    request.say(f"pretext: masked reconstruction of {len(train)} unlabelled views (no labelled corpus: "
                f"data.file.source_path is not set)")
    # No augmentation: the target is the input itself, so a change to the input alone would
    # teach the wrong output; the masked views are this task's augmentation already.
    params = request.params.model_copy(update={"trainer": request.params.trainer.model_copy(update={"augment": False})})
    request = request.derive(params=params, spec=reconstruction_spec(request.spec)).budgeted(len(train), info.kind)
    trained = _fit_measured(request, fresh_model(request.params, info), train, val, info)
    trained.pretext = True
    return trained


def _fit_measured(request: TrainRequest, build: ModelFactory, train: TrainData, val: TrainData,
                  info: TaskInfo) -> TrainedModel:
    """A fresh model fitted, its `optimizer.lr: auto` measured on `train` first."""
    return fit_model(measured_lr(request, build, train), *build(), train, val, info)


def fresh_model(params: Params, info: TaskInfo) -> ModelFactory:
    def build():
        seed_everything(params.seed)
        return build_model(params.model, info.input_shape, info.num_classes, info.kind), None, []
    return build
