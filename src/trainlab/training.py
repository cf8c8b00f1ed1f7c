"""Train a model on one task of the prepared data: what pretrain, finetune and search share."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from dataclasses import dataclass, field
from typing import Sequence

from trainlab import paths
from trainlab.config import Params, TrainSpec
from trainlab.data import TaskInfo, load_split, read_manifest, task_info
from trainlab.engine import (Checkpointing, FitResult, Hook, ParamGroup, Runtime, SignalAtStep, TrainData, fit,
                             seed_everything)
from trainlab.errors import TrainingDiverged
from trainlab.models import Classifier, build_model
from trainlab.reporting import CurveRecorder, Curves

# Tests set this to "STEP" or "STEP:SIGNAME" to interrupt a run right after that step.
TEST_SIGNAL_ENV = "TRAINLAB_TEST_SIGNAL_AT_STEP"


@dataclass
class TrainedModel:
    model: Classifier
    result: FitResult
    info: TaskInfo
    curves: Curves = field(default_factory=dict)
    checkpointing: Checkpointing | None = None


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


def fingerprint(*parts: object) -> str:
    """Identity of a training run's inputs: a resume checkpoint is reused only if it matches."""
    blob = json.dumps([p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_task(params: Params, spec: TrainSpec, task: str, *, resume_name: str,
               model: Classifier | None = None, groups: list[ParamGroup] | None = None,
               hooks: Sequence[Hook] = (), runtime: Runtime | None = None, label: str = "train",
               data: tuple[TrainData, TrainData, TaskInfo] | None = None,
               identity: object = None) -> TrainedModel:
    """Build (or take) a model and fit it on `task`, resuming from its checkpoint if one fits.

    The resume checkpoint is removed by the caller once the final outputs are written
    (see `finish`), so a rerun after success starts afresh.
    """
    train, val, info = data or load_task(task, params)
    if model is None:
        seed_everything(params.seed)
        model = build_model(params.model, info.input_shape, info.num_classes)
    # Trainer settings that do not change the maths (progress, logging cadence) are left out.
    trainer_math = params.trainer.model_dump(exclude={"progress", "log_every_steps", "num_workers", "loader"})
    ident = fingerprint(params.seed, params.model, trainer_math, spec, data_hashes(), identity)
    checkpointing = Checkpointing(paths.resume_checkpoint(resume_name), ident,
                                  params.trainer.checkpoint_every_steps)
    recorder = CurveRecorder()
    try:
        result = fit(model, train, val, spec, params.trainer, seed=params.seed, groups=groups,
                     hooks=[recorder, *hooks, checkpointing, *_test_hooks()], runtime=runtime, label=label)
    except TrainingDiverged as err:
        err.curves, err.num_classes = recorder.curves, info.num_classes
        raise
    return TrainedModel(model, result, info, recorder.curves, checkpointing)


def _test_hooks() -> list[Hook]:
    """The signal a test asked for with TEST_SIGNAL_ENV (after the step's checkpoint is written)."""
    spec = os.environ.get(TEST_SIGNAL_ENV)
    if not spec:
        return []
    step, _, name = spec.partition(":")
    return [SignalAtStep(int(step), getattr(signal, name or "SIGINT"))]


def finish(trained: TrainedModel) -> None:
    """Drop the resume checkpoint: the run's outputs are written, nothing to resume."""
    if trained.checkpointing is not None:
        trained.checkpointing.remove()
