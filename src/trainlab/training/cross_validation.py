"""Model selection by k-fold cross-validation when the validation split is too small to select.

The labelled data (train + val) is split into `selection.folds` stratified folds; each
fold is predicted every epoch by a model trained on the others. The epoch whose pooled
out-of-fold predictions score best is kept, and the final model is refit on all labelled
data for exactly that many epochs (see `trainlab.training.folds` for why).

On a CPU, folds of tiny steps train on one thread each, so the stage's threads are shared
out as processes (`trainlab.training.jobs`). The refit then trains alongside the folds
instead of after them: it runs the whole budget, keeps its weights after every epoch, and
the epoch cross-validation picks is loaded once all folds are in. The schedule depends
only on the budget, so those weights are the ones a refit stopped at that epoch would have
(tests/test_cv_folds.py checks it bit for bit); it saves one fit's time out of k + 1.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from trainlab.config import TrainSpec
from trainlab.config.schema import TrainerConfig
from trainlab.data import TaskInfo
from trainlab.engine import Checkpointing, Hook, LoopState, Runtime, TrainData
from trainlab.engine.averaging import swa_start_epoch
from trainlab.engine.runtime import setup_runtime, tiny_steps
from trainlab.heldout import HeldOut
from trainlab.training.fit import ModelFactory, TrainedModel, TrainRequest, fit_model
from trainlab.training.folds import (EpochPredictions, StopAfter, choose_epoch, concat, pooled_per_epoch,
                                     stratified_folds, subset)
from trainlab.training.jobs import run_shared
from trainlab.training.lr_choice import measured_lr

# The refit alongside the folds keeps a copy of the weights per epoch; above this many
# bytes in all it trains after the folds instead, stopping at the chosen epoch.
SNAPSHOT_BUDGET_BYTES = 256 * 2**20


def cross_validated(request: TrainRequest, build: ModelFactory, train: TrainData, val: TrainData,
                    info: TaskInfo) -> TrainedModel:
    """k-fold CV over train + val picks the epoch; the model refit on all of it is returned.

    A search trial's pruner watches the first fold: every trial of a study holds out the
    same first fold (same labels, same split seed), so their curves compare epoch by
    epoch, and a trial that is poor there is stopped before its other folds and refit.
    The stage's own hooks (its MLflow run) see none of the fits: the refit's curves are
    logged afterwards, with val/* replaced by the pooled out-of-fold scores.
    """
    params, spec = request.params, request.spec
    labelled = concat(train, val)
    y = np.asarray(labelled.y)
    held = stratified_folds(y, params.selection.folds, params.data.split_seed)
    budgeted, note = request.resolve_budget(len(labelled), info.kind)
    request.say(f"selection: {len(held)}-fold CV (validation split has {len(val)} samples, below "
                f"selection.cv_below {params.selection.cv_below})" + (f"; {note}" if note else ""))
    # `lr: auto`: one range test on the refit's data (all labelled), its rate for every fold too.
    budgeted = measured_lr(budgeted, build, labelled, fits=len(held) + 1)
    fold_spec = budgeted.spec.model_copy(update={"early_stopping": spec.early_stopping.model_copy(
        update={"enabled": False})})
    # Folds train quietly (one line each): k x epochs progress lines would bury the output.
    quiet = params.model_copy(update={"trainer": params.trainer.model_copy(update={"progress": "off"})})
    runtime = request.runtime or setup_runtime(params.trainer)
    base = request.derive(params=quiet, spec=fold_spec, runtime=runtime, hooks=(), pruning=None,
                          lr_test=budgeted.lr_test, lr_record=budgeted.lr_record)
    x = np.asarray(labelled.x)
    processes = _fold_processes(runtime, fold_spec.batch_size, int(np.prod(x.shape[1:])), len(held))
    snapshots = (EpochSnapshots() if processes > 1 and _snapshot_bytes(build, fold_spec.epochs)
                 <= SNAPSHOT_BUDGET_BYTES else None)

    def fold(k: int) -> tuple[list[np.ndarray], list[Checkpointing]]:
        model, groups, extra = build()
        rest = np.setdiff1d(np.arange(len(y)), held[k])
        predictions = EpochPredictions(x[held[k]], info.regression)
        fold_request = base.derive(label=f"{request.label} fold {k + 1}/{len(held)}",
                                   resume_name=f"{request.resume_name}-fold{k}", identity=(request.identity, "fold", k),
                                   pruning=request.pruning if k == 0 else None)
        fitted = fit_model(fold_request, model, groups, [*extra, predictions], subset(labelled, rest),
                           subset(labelled, held[k]), info)
        return predictions.per_epoch, fitted.checkpoints

    refit_request = base.derive(label=f"{request.label} refit", resume_name=f"{request.resume_name}-refit")

    def refit_every_epoch() -> TrainedModel:
        model, groups, extra = build()
        return fit_model(refit_request.derive(identity=(request.identity, "refit")), model, groups,
                         [*extra, snapshots], labelled, subset(labelled, held[0]), info)

    fold_of = list(range(len(held)))   # the fold each job trains; -1 the refit
    if snapshots is not None:   # index `processes`: this process's second job (run_shared), after fold 0
        fold_of.insert(processes, -1)
    jobs: list[Callable[[], Any]] = [refit_every_epoch if k < 0 else (lambda k=k: fold(k)) for k in fold_of]

    def report(i: int, result: Any) -> None:
        k = fold_of[i]
        if k >= 0:
            losses = [HeldOut("cv", p, y[held[k]]).loss for p in result[0]]
            request.say(f"fold {k + 1}/{len(held)}: {len(y) - len(held[k])} train, {len(held[k])} held out; best "
                        f"held-out loss {min(losses):.4f} at epoch {int(np.argmin(losses)) + 1}")

    results = run_shared(jobs, processes, report)
    folds = [results[i] for i, k in enumerate(fold_of) if k >= 0]
    refit = results[fold_of.index(-1)] if snapshots is not None else None

    def refit_to(epochs: int) -> TrainedModel:   # the serial refit, after the folds (with progress shown)
        model, groups, extra = build()
        return fit_model(refit_request.derive(params=params, identity=(request.identity, "refit", epochs - 1)),
                         model, groups, [*extra, StopAfter(epochs)], labelled, subset(labelled, held[0]), info)

    candidates = epochs_with_own_weights(params.trainer, fold_spec.epochs)
    return _select_and_refit(spec, held, y, folds, refit, snapshots, refit_to, request, candidates)


def _select_and_refit(spec: TrainSpec, held: list[np.ndarray], y: np.ndarray,
                      folds: list[tuple[list[np.ndarray], list[Checkpointing]]], refit: TrainedModel | None,
                      snapshots: "EpochSnapshots | None", refit_to: Callable[[int], TrainedModel],
                      request: TrainRequest, candidates: list[int]) -> TrainedModel:
    """Choose the epoch on the pooled out-of-fold predictions; return the refit as of that epoch,
    taken from its per-epoch snapshots where it trained alongside the folds, else trained now."""
    pooled = pooled_per_epoch(held, [per_epoch for per_epoch, _ in folds], len(y))
    es = spec.early_stopping
    best = choose_epoch(pooled, y, es.monitor, es.enabled, candidates)
    kept = refit is not None and snapshots is not None and snapshots.keep_epoch(refit, best)
    request.say(f"cross-validation chose epoch {best + 1} (pooled out-of-fold loss "
        f"{HeldOut('cv', pooled[best], y).loss:.4f}); " + (
            f"the refit on all {len(y)} labelled samples keeps its weights of that epoch" if kept else
            f"refitting on all {len(y)} labelled samples"))
    if not kept:
        refit = refit_to(best + 1)
    refit.checkpoints = [c for _, saved in folds for c in saved] + refit.checkpoints
    refit.heldout = HeldOut("cv", pooled[best], y, len(held))
    refit.cross_validated = True
    _replace_val_curves(refit, pooled, y, best)
    return refit


def epochs_with_own_weights(trainer: TrainerConfig, epochs: int) -> list[int]:
    """The epochs cross-validation may pick: every one, except under SWA the epochs after its
    start but before the last. They validated the weights trained so far, while a refit stopped
    there would hand back an average of part of the SWA phase, which no fold has scored."""
    if trainer.averaging != "swa":
        return list(range(epochs))
    return [*range(swa_start_epoch(trainer, epochs)), epochs - 1]


class EpochSnapshots(Hook):
    """The model's weights (and buffers) after every epoch, to keep the one CV chooses afterwards."""

    def __init__(self) -> None:
        self.states: dict[int, tuple[int, dict[str, torch.Tensor]]] = {}   # epoch: (steps done, state dict)

    def on_epoch_end(self, state: LoopState, metrics: dict[str, float]) -> None:
        weights = {k: v.detach().clone() for k, v in state.evaluated.state_dict().items()}
        self.states[state.epoch] = (state.step, weights)

    def keep_epoch(self, trained: TrainedModel, epoch: int) -> bool:
        """Make `trained` what training stopped after `epoch` (0-based) would have left.

        False when that epoch's weights were never kept: the refit resumed from a
        checkpoint written after it (snapshots are not checkpointed; the caller refits)."""
        if epoch not in self.states:
            return False
        steps, weights = self.states[epoch]
        trained.model.load_state_dict(weights)
        result = trained.result
        epoch_keys = set(result.history[0])
        result.history = result.history[:epoch + 1]
        result.steps = steps
        result.stop_reason = StopAfter.reason(epoch + 1)
        # Epoch metrics are indexed by epoch, step metrics by the 0-based step.
        trained.curves = {name: [(x, v) for x, v in points if (x <= epoch if name in epoch_keys else x < steps)]
                          for name, points in trained.curves.items()}
        self.states.clear()
        return True


def _snapshot_bytes(build: ModelFactory, epochs: int) -> int:
    model, _, _ = build()
    return epochs * sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _fold_processes(runtime: Runtime, batch_size: int, sample_values: int, folds: int) -> int:
    """How many processes share the folds: the stage's CPU threads, when each fold fit runs on one."""
    if not tiny_steps(runtime, batch_size, sample_values):
        return 1   # GPU, distributed, or steps big enough to use every thread themselves
    return max(1, min(torch.get_num_threads(), folds))


def _replace_val_curves(trained: TrainedModel, pooled: list[np.ndarray], y: np.ndarray, best: int) -> None:
    """The refit's own val metrics are in-sample; under CV, val/* is the pooled out-of-fold score."""
    names = ["val/loss"] + ([] if HeldOut("cv", pooled[0], y).regression else ["val/acc"])
    for epoch, row in enumerate(trained.result.history):
        scored = HeldOut("cv", pooled[epoch], y)
        row.update({"val/loss": scored.loss, **({"val/acc": scored.acc} if "val/acc" in names else {})})
    shown = range(len(trained.result.history))
    for name in names:
        trained.curves[name] = [(e, trained.result.history[e][name]) for e in shown]
    result = trained.result
    result.best_epoch, result.monitor = best, "val/loss"
    result.best_value = result.history[best]["val/loss"]
