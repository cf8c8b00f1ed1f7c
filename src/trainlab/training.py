"""Train a model on one task of the prepared data: what pretrain, finetune and search share."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from trainlab import paths
from trainlab.engine.budget import resolve_budget
from trainlab.config import Params, TrainSpec
from trainlab.data import TaskInfo, load_split, read_manifest, task_info
from trainlab.engine import (Checkpointing, FitResult, Hook, ParamGroup, Runtime, SignalAtStep, TrainData, fit,
                             seed_everything)
from trainlab.errors import TrainingDiverged
from trainlab.models import Classifier, build_model
from trainlab.pretext import reconstruction_spec, reconstruction_task
from trainlab.learning_curves import CurveRecorder, Curves
from trainlab.selection import HeldOut, predict_probs, uses_cv

# What a training needs besides data: a fresh model, its parameter groups (None = one
# group) and hooks bound to that model (gradual unfreezing). Called once per fit, so
# cross-validation can train a fresh copy for every fold.
ModelFactory = Callable[[], tuple[Classifier, "list[ParamGroup] | None", "list[Hook]"]]

# Tests set this to "STEP" or "STEP:SIGNAME" to interrupt a run right after that step.
TEST_SIGNAL_ENV = "TRAINLAB_TEST_SIGNAL_AT_STEP"


@dataclass
class TrainedModel:
    model: Classifier
    result: FitResult
    info: TaskInfo
    curves: Curves = field(default_factory=dict)
    checkpoints: list[Checkpointing] = field(default_factory=list)
    heldout: HeldOut | None = None      # target task only: what selection and calibration use
    cross_validated: bool = False       # curves were assembled after the fact (log them afterwards)
    pretext: bool = False               # a masked-reconstruction pretraining: no classes, no accuracy


def load_task(task: str, params: Params) -> tuple[TrainData, TrainData, TaskInfo]:
    """Train and val splits of `task` (memory-mapped when the DataLoader path is chosen)."""
    mmap = params.trainer.loader == "dataloader"
    train = load_split(paths.PREPARED, task, "train", mmap=mmap)
    val = load_split(paths.PREPARED, task, "val", mmap=mmap)
    return TrainData(train.x, train.y), TrainData(val.x, val.y), task_info(paths.PREPARED, task)


def data_hashes() -> dict[str, str]:
    """Content hash of every prepared file, from the manifest (tags and fingerprints)."""
    manifest = read_manifest(paths.PREPARED)
    return {f"{task}/{split}/{name}": info["sha256"]
            for task, entry in manifest["tasks"].items()
            for split, split_entry in entry["splits"].items()
            for name, info in split_entry["files"].items()}


def source_is_labelled() -> bool:
    """False when the source task is the target pool's inputs without labels (see prepare)."""
    return bool(read_manifest(paths.PREPARED).get("source_labelled", True))


def fingerprint(*parts: object) -> str:
    """Identity of a training run's inputs: a resume checkpoint is reused only if it matches."""
    blob = json.dumps([p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
        from trainlab.cross_validation import cross_validated   # it builds on this module's fit_model

        return cross_validated(params, spec, build, train, val, info, runtime, label, resume_name, identity, pruning)
    budget = resolve_budget(spec, params.trainer, len(train))
    say(budget.note, label, runtime)
    model, groups, extra = build()
    fitted = fit_model(params, budget.spec, model, groups, train, val, info,
                       [*extra, *hooks, *([pruning] if pruning else [])], runtime, label, resume_name, identity)
    if task == "target":
        fitted.heldout = HeldOut("val", predict_probs(model, val.x), np.asarray(val.y))
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


def fit_model(params: Params, spec: TrainSpec, model: Classifier, groups, train: TrainData, val: TrainData,
              info: TaskInfo, hooks: Sequence[Hook], runtime: Runtime | None, label: str, resume_name: str,
              identity: object) -> TrainedModel:
    """fit() with a resume checkpoint keyed on everything that decides the result, and curves recorded."""
    # Trainer settings that do not change the maths (progress, logging cadence) are left out.
    trainer_math = params.trainer.model_dump(exclude={"progress", "log_every_steps", "num_workers", "loader",
                                                      "checkpoint_min_interval_s"})
    ident = fingerprint(params.seed, params.model, trainer_math, spec, data_hashes(), identity)
    checkpointing = Checkpointing(paths.resume_checkpoint(resume_name), ident,
                                  params.trainer.checkpoint_every_steps,
                                  params.trainer.checkpoint_min_interval_s)
    recorder = CurveRecorder()
    try:
        result = fit(model, train, val, spec, params.trainer, seed=params.seed, groups=groups,
                     hooks=[recorder, *hooks, *_test_hooks()], checkpointing=checkpointing, runtime=runtime,
                     label=label)
    except TrainingDiverged as err:
        raise TrainingDiverged(str(err), recorder.curves, info.num_classes) from None
    return TrainedModel(model, result, info, recorder.curves, [checkpointing])


def _fresh_model(params: Params, info: TaskInfo) -> ModelFactory:
    def build():
        seed_everything(params.seed)
        return build_model(params.model, info.input_shape, info.num_classes), None, []
    return build


def say(note: str, label: str, runtime: Runtime | None) -> None:
    if note and (runtime is None or runtime.is_main):
        print(f"[{label}] {note}", flush=True)


def _test_hooks() -> list[Hook]:
    """The signal a test asked for with TEST_SIGNAL_ENV (after the step's checkpoint is written)."""
    spec = os.environ.get(TEST_SIGNAL_ENV)
    if not spec:
        return []
    step, _, name = spec.partition(":")
    return [SignalAtStep(int(step), getattr(signal, name or "SIGINT"))]


def finish(trained: TrainedModel) -> None:
    """Drop the resume checkpoints: the run's outputs are written, nothing to resume."""
    for checkpointing in trained.checkpoints:
        checkpointing.remove()
