"""One fit of a model, as every training in trainlab runs it: resumable, its curves recorded.

A `TrainRequest` holds what decides a training besides its data and model: the params,
the stage's training settings (budget resolved), where it checkpoints, how it prints, its
hooks. `fit_model` wraps the engine's `fit()` with a resume checkpoint keyed on
everything that decides the result (`run_identity`) and returns a `TrainedModel`.
`trainlab.training.task` (a task's plain fit) and `trainlab.training.cross_validation`
(folds and refit) build on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Protocol, Sequence

from trainlab import paths
from trainlab.config import Params, TrainSpec
from trainlab.data import TaskInfo, data_hashes
from trainlab.engine import Checkpointing, FitResult, Hook, ParamGroup, Runtime, TrainData, fit
from trainlab.engine.budget import resolve_budget
from trainlab.engine.lr_range import RangeTest
from trainlab.errors import TrainingDiverged
from trainlab.hashing import fingerprint
from trainlab.heldout import HeldOut
from trainlab.models import Classifier
from trainlab.training.curves import CurveRecorder, Curves
from trainlab.training.fault_injection import requested_faults

# What a training needs besides data: a fresh model, its parameter groups (None = one
# group) and hooks bound to that model (gradual unfreezing). Called once per fit, so
# cross-validation can train a fresh copy for every fold.
ModelFactory = Callable[[], tuple[Classifier, "list[ParamGroup] | None", "list[Hook]"]]


class Removable(Protocol):
    """Resume state a finished stage removes: a Checkpointing, a kept range test."""

    def remove(self) -> None: ...


@dataclass(frozen=True)
class TrainRequest:
    """One training's settings, passed down whole from the stage to every fold and refit."""

    params: Params
    spec: TrainSpec                   # the stage's training settings (`auto` budget resolved by `budgeted`)
    resume_name: str                  # its resume checkpoint: paths.resume_checkpoint(resume_name)
    label: str = "train"              # what its printed lines start with
    runtime: Runtime | None = None
    hooks: tuple[Hook, ...] = ()
    identity: object = None           # what else decides the result (the pretrained file, a fold)
    pruning: Hook | None = None       # a search trial's pruner (under CV it watches the first fold)
    lr_test: RangeTest | None = None  # the range test that chose `optimizer.lr: auto` (training.lr_choice)
    lr_record: "Removable | None" = None    # where that test is kept for a resume (lr_choice.RateRecord)
    lr_test_only: bool = False        # `trainlab lr-find`: stop once the range test has run (RangeTestOnly)

    def budgeted(self, n_train: int, kind: str) -> "TrainRequest":
        """The request with `epochs: auto` / `batch_size: auto` resolved for `n_train` samples
        of `kind` (table, series, image), the resolution printed."""
        request, note = self.resolve_budget(n_train, kind)
        self.say(note)
        return request

    def resolve_budget(self, n_train: int, kind: str) -> tuple["TrainRequest", str]:
        """The request with its budget resolved once for `n_train` samples of `kind` (every fold
        and the refit share it), and the line saying what `auto` became ('' if nothing was auto)."""
        budget = resolve_budget(self.spec, self.params.trainer, n_train, kind)
        return replace(self, spec=budget.spec), budget.note

    def derive(self, **changes) -> "TrainRequest":
        return replace(self, **changes)

    def say(self, note: str) -> None:
        if note and (self.runtime is None or self.runtime.is_main):
            print(f"[{self.label}] {note}", flush=True)


@dataclass
class TrainedModel:
    model: Classifier
    result: FitResult
    info: TaskInfo
    curves: Curves = field(default_factory=dict)
    checkpoints: "list[Removable]" = field(default_factory=list)   # resume state `finish` removes
    heldout: HeldOut | None = None      # target task only: what selection and calibration use
    cross_validated: bool = False       # curves were assembled after the fact (log them afterwards)
    pretext: bool = False               # a masked-reconstruction pretraining: no classes, no accuracy
    lr_test: RangeTest | None = None    # what chose its rate, for `optimizer.lr: auto`


def run_identity(request: TrainRequest) -> dict[str, str]:
    """Everything that decides a fit's result, by name: a resume checkpoint is reused only
    if every entry matches, and a mismatch is reported by the names that differ."""
    params = request.params
    return {"seed": str(params.seed), "model": fingerprint(params.model), "training": fingerprint(request.spec),
            "data": fingerprint(data_hashes(paths.PREPARED)), "identity": fingerprint(request.identity),
            **{f"trainer.{key}": str(value) for key, value in params.trainer.maths().items()}}


def fit_model(request: TrainRequest, model: Classifier, groups: list[ParamGroup] | None, extra: Sequence[Hook],
              train: TrainData, val: TrainData, info: TaskInfo) -> TrainedModel:
    """fit() with a resume checkpoint keyed on everything that decides the result, and curves recorded."""
    params = request.params
    checkpointing = Checkpointing(paths.resume_checkpoint(request.resume_name), run_identity(request),
                                  params.trainer.checkpoint_every_steps, params.trainer.checkpoint_min_interval_s)
    recorder = CurveRecorder()
    hooks = [recorder, *extra, *request.hooks, *([request.pruning] if request.pruning else []), *requested_faults()]
    try:
        result = fit(model, train, val, request.spec, params.trainer, seed=params.seed, groups=groups, hooks=hooks,
                     checkpointing=checkpointing, runtime=request.runtime, label=request.label, kind=info.kind)
    except TrainingDiverged as err:
        raise TrainingDiverged(str(err), recorder.curves, info.num_classes) from None
    kept = [checkpointing, *([request.lr_record] if request.lr_record is not None else [])]
    return TrainedModel(model, result, info, recorder.curves, kept, lr_test=request.lr_test)


def finish(trained: TrainedModel) -> None:
    """Drop the resume checkpoints (and a kept range test): the run's outputs are written."""
    for checkpointing in trained.checkpoints:
        checkpointing.remove()
