"""One fit of a model, as every training in trainlab runs it: resumable, its curves recorded.

`fit_model` wraps the engine's `fit()` with a resume checkpoint keyed on everything that
decides the result (`fingerprint`), and returns a `TrainedModel`. `trainlab.training`
(a task's plain fit) and `trainlab.cross_validation` (folds and refit) build on it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
from dataclasses import dataclass, field
from typing import Callable, Sequence

from trainlab import paths
from trainlab.config import Params, TrainSpec
from trainlab.data import TaskInfo, read_manifest
from trainlab.engine import (Checkpointing, FaultAtStep, FitResult, Hook, ParamGroup, Runtime, SignalAtStep,
                             TrainData, fit)
from trainlab.errors import TrainingDiverged
from trainlab.learning_curves import CurveRecorder, Curves
from trainlab.models import Classifier
from trainlab.selection import HeldOut

# What a training needs besides data: a fresh model, its parameter groups (None = one
# group) and hooks bound to that model (gradual unfreezing). Called once per fit, so
# cross-validation can train a fresh copy for every fold.
ModelFactory = Callable[[], tuple[Classifier, "list[ParamGroup] | None", "list[Hook]"]]

# Tests set this to "STEP" or "STEP:SIGNAME" to interrupt a run right after that step.
TEST_SIGNAL_ENV = "TRAINLAB_TEST_SIGNAL_AT_STEP"
# ... and this to "STEP:ENOSPC" (or another errno name) to fail it there as a full disk would.
TEST_FAULT_ENV = "TRAINLAB_TEST_FAULT_AT_STEP"


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


def data_hashes() -> dict[str, str]:
    """Content hash of every prepared file, from the manifest (tags and fingerprints)."""
    manifest = read_manifest(paths.PREPARED)
    return {f"{task}/{split}/{name}": info["sha256"]
            for task, entry in manifest["tasks"].items()
            for split, split_entry in entry["splits"].items()
            for name, info in split_entry["files"].items()}


def fingerprint(*parts: object) -> str:
    """Identity of a training run's inputs: a resume checkpoint is reused only if it matches."""
    blob = json.dumps([p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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


def say(note: str, label: str, runtime: Runtime | None) -> None:
    if note and (runtime is None or runtime.is_main):
        print(f"[{label}] {note}", flush=True)


def _test_hooks() -> list[Hook]:
    """The signal or fault a test asked for with TEST_SIGNAL_ENV / TEST_FAULT_ENV (after the
    step's checkpoint is written)."""
    hooks: list[Hook] = []
    spec = os.environ.get(TEST_SIGNAL_ENV)
    if spec:
        step, _, name = spec.partition(":")
        hooks.append(SignalAtStep(int(step), getattr(signal, name or "SIGINT")))
    spec = os.environ.get(TEST_FAULT_ENV)
    if spec:
        step, _, name = spec.partition(":")
        hooks.append(FaultAtStep(int(step), getattr(errno, name or "ENOSPC")))
    return hooks


def finish(trained: TrainedModel) -> None:
    """Drop the resume checkpoints: the run's outputs are written, nothing to resume."""
    for checkpointing in trained.checkpoints:
        checkpointing.remove()
