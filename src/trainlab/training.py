"""Train a model on one task of the prepared data: what pretrain, finetune and search share."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from trainlab import paths
from trainlab.engine.budget import resolve_budget
from trainlab.config import Params, TrainSpec
from trainlab.data import TaskInfo, load_split, read_manifest, task_info
from trainlab.cross_validation import cross_validated
from trainlab.engine import Hook, Runtime, TrainData, seed_everything
from trainlab.fitting import (TEST_SIGNAL_ENV, ModelFactory, TrainedModel, data_hashes, fingerprint, finish,
                              fit_model, say)
from trainlab.models import build_model
from trainlab.pretext import reconstruction_spec, reconstruction_task
from trainlab.selection import HeldOut, predict_outputs, uses_cv

# What stages, search and tests import from here (defined in trainlab.fitting).
__all__ = ["TEST_SIGNAL_ENV", "ModelFactory", "TrainedModel", "data_hashes", "fingerprint", "finish", "load_task",
           "source_is_labelled", "train_task"]


def load_task(task: str, params: Params) -> tuple[TrainData, TrainData, TaskInfo]:
    """Train and val splits of `task` (memory-mapped when the DataLoader path is chosen)."""
    mmap = params.trainer.loader == "dataloader"
    train = load_split(paths.PREPARED, task, "train", mmap=mmap)
    val = load_split(paths.PREPARED, task, "val", mmap=mmap)
    return TrainData(train.x, train.y), TrainData(val.x, val.y), task_info(paths.PREPARED, task)


def source_is_labelled() -> bool:
    """False when the source task is the target pool's inputs without labels (see prepare)."""
    return bool(read_manifest(paths.PREPARED).get("source_labelled", True))


def train_task(params: Params, spec: TrainSpec, task: str, *, resume_name: str,
               build: ModelFactory | None = None, hooks: Sequence[Hook] = (), runtime: Runtime | None = None,
               label: str = "train", data: tuple[TrainData, TrainData, TaskInfo] | None = None,
               identity: object = None, pruning: Hook | None = None) -> TrainedModel:
    """Build a model and fit it on `task`, resuming from its checkpoint if one fits.

    On the target task with a validation split below `selection.cv_below`, the model is
    selected by cross-validation and refit (see `trainlab.cross_validation`). Resume
    checkpoints are removed by the caller once the final outputs are written (`finish`).
    `pruning` (a search trial's) watches the validation metric of the run, or under
    cross-validation that of the first fold.
    """
    train, val, info = data or load_task(task, params)
    if task == "source" and not source_is_labelled():
        return _pretext(params, spec, train, val, info, hooks, runtime, label, resume_name, identity)
    build = build or _fresh_model(params, info)
    if task == "target" and uses_cv(params, len(val)):
        return cross_validated(params, spec, build, train, val, info, runtime, label, resume_name, identity, pruning)
    budget = resolve_budget(spec, params.trainer, len(train))
    say(budget.note, label, runtime)
    model, groups, extra = build()
    fitted = fit_model(params, budget.spec, model, groups, train, val, info,
                       [*extra, *hooks, *([pruning] if pruning else [])], runtime, label, resume_name, identity)
    if task == "target":
        fitted.heldout = HeldOut("val", predict_outputs(model, val.x, info.regression), np.asarray(val.y))
    return fitted


def _pretext(params: Params, spec: TrainSpec, train: TrainData, val: TrainData, info: TaskInfo,
             hooks: Sequence[Hook], runtime: Runtime | None, label: str, resume_name: str,
             identity: object) -> TrainedModel:
    """Masked-reconstruction pretraining on unlabelled inputs (see `trainlab.pretext`)."""
    train, val, info = reconstruction_task(train, val, info, params.seed)
    budget = resolve_budget(reconstruction_spec(spec), params.trainer, len(train))
    say(f"pretext: masked reconstruction of {len(train)} unlabelled views (no labelled corpus: "
        f"data.file.source_path is not set)", label, runtime)
    say(budget.note, label, runtime)
    model, groups, extra = _fresh_model(params, info)()
    trained = fit_model(params, budget.spec, model, groups, train, val, info, [*extra, *hooks], runtime, label,
                        resume_name, identity)
    trained.pretext = True
    return trained


def _fresh_model(params: Params, info: TaskInfo) -> ModelFactory:
    def build():
        seed_everything(params.seed)
        return build_model(params.model, info.input_shape, info.num_classes, info.kind), None, []
    return build
