"""The Optuna study: storage, seeded samplers, pruners, trial budget and recovery after a kill.

Every trial gets a *slot*: its position in the sequence of trials that count. A trial
killed with its process is marked failed and re-queued with its slot and params, and
the samplers reseed from (seed, slot). So a search killed and resumed proposes the
same trials, in the same order, as one never interrupted (with one worker).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import optuna
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.trial import TrialState

from trainlab import paths
from trainlab.config import Params
from trainlab.search.space import grid
from trainlab.processes import pid_alive

SLOT, KILLED, HOST, PID = "slot", "killed", "host", "pid"
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def storage_url(params: Params) -> str | optuna.storages.BaseStorage:
    """search.storage, else a journal file kept across runs (safe for parallel local workers)."""
    if params.search.storage:
        return params.search.storage
    path = Path(paths.SEARCH_STORAGE).with_suffix(".journal")
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def open_study(params: Params) -> optuna.Study:
    """Create or load the study named in params; one direction: minimise val/loss or maximise val/acc."""
    cfg = params.search
    direction = "minimize" if cfg.metric.endswith("loss") else "maximize"
    return optuna.create_study(study_name=study_name(params), storage=storage_url(params), direction=direction,
                               sampler=make_sampler(params), pruner=make_pruner(params), load_if_exists=True)


def study_name(params: Params) -> str:
    """search.study_name plus a hash of everything the trials depend on.

    Editing the space, the finetune config or the data starts a new study instead of
    mixing trials of two experiments; an unchanged config resumes its study.
    """
    from trainlab.training import data_hashes, fingerprint

    search = params.search.model_dump(exclude={"workers", "timeout_s", "storage", "top_k"})
    return f"{params.search.study_name}-{fingerprint(search, params.seed, params.model, params.trainer.model_dump(exclude={'progress', 'threads'}), params.finetune, data_hashes())}"


def make_sampler(params: Params) -> optuna.samplers.BaseSampler:
    cfg = params.search
    if cfg.sampler == "tpe":
        return SlotSeededTPE(seed=cfg.seed, n_startup_trials=min(5, cfg.n_trials))
    # grid: every point is enqueued up front (see queue_grid), the sampler never proposes.
    return SlotSeededRandom(seed=cfg.seed)


def make_pruner(params: Params) -> optuna.pruners.BasePruner:
    if params.search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3)
    if params.search.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=3, reduction_factor=3)
    return optuna.pruners.NopPruner()


def _assign_slot(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> int:
    """A queued trial keeps the slot it was queued with; a fresh one takes the next free slot."""
    if SLOT in trial.user_attrs:
        slot = int(trial.user_attrs[SLOT])
    else:
        taken = {int(t.user_attrs[SLOT]) for t in study.get_trials(deepcopy=False)
                 if SLOT in t.user_attrs and not t.user_attrs.get(KILLED) and t.number != trial.number}
        slot = next(i for i in range(len(taken) + 1) if i not in taken)
    storage = study._storage
    storage.set_trial_user_attr(trial._trial_id, SLOT, slot)
    storage.set_trial_user_attr(trial._trial_id, HOST, socket.gethostname())
    storage.set_trial_user_attr(trial._trial_id, PID, os.getpid())
    return slot


class SlotSeededRandom(optuna.samplers.RandomSampler):
    """RandomSampler whose draws for a trial depend only on (seed, slot)."""

    def __init__(self, seed: int):
        super().__init__(seed=seed)
        self._base_seed = seed

    def before_trial(self, study, trial) -> None:
        self._rng = LazyRandomState(self._base_seed * 10_007 + _assign_slot(study, trial))


class SlotSeededTPE(optuna.samplers.TPESampler):
    """TPESampler reseeded per slot; its history ignores failed (killed) trials anyway."""

    def __init__(self, seed: int, n_startup_trials: int):
        super().__init__(seed=seed, n_startup_trials=n_startup_trials, multivariate=True)
        self._base_seed = seed

    def before_trial(self, study, trial) -> None:
        slot = _assign_slot(study, trial)
        self._rng = LazyRandomState(self._base_seed * 10_007 + slot)
        self._random_sampler._rng = LazyRandomState(self._base_seed * 10_007 + slot + 1)
        super().before_trial(study, trial)


def queue_grid(study: optuna.Study, params: Params) -> int:
    """Grid search: enqueue every grid point not yet queued, in a fixed order. Returns the grid size."""
    points = grid(params.search.space, params.search.grid_points)
    queued = {int(t.user_attrs[SLOT]) for t in study.get_trials(deepcopy=False)
              if SLOT in t.user_attrs and not t.user_attrs.get(KILLED)}
    for slot, point in enumerate(points[: params.search.n_trials]):
        if slot not in queued:
            study.enqueue_trial(point, user_attrs={SLOT: slot})
    return len(points)


def recover_killed(study: optuna.Study) -> list[int]:
    """Trials left RUNNING by a dead process on this host become FAIL(killed) and are re-queued."""
    host, requeued = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get(HOST) != host or pid_alive(int(attrs.get(PID, 0))):
            continue
        study._storage.set_trial_user_attr(trial._trial_id, KILLED, True)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={SLOT: attrs[SLOT]}, skip_if_exists=False)
        requeued.append(int(attrs[SLOT]))
    return requeued


def requeue_interrupted(trial: optuna.Trial) -> None:
    """A trial stopped by Ctrl-C or SIGTERM: re-queued with its slot and params, like a killed one.

    Optuna records it as FAIL; without the re-queue it would use up the budget and the
    rerun would skip its slot instead of resuming it from its checkpoint.
    """
    storage = trial.study._storage
    slot = storage.get_trial_user_attrs(trial._trial_id)[SLOT]
    storage.set_trial_user_attr(trial._trial_id, KILLED, True)
    trial.study.enqueue_trial(trial.params, user_attrs={SLOT: slot}, skip_if_exists=False)


def counted_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Finished trials that use up the budget (killed ones do not)."""
    return [t for t in study.get_trials(deepcopy=False, states=COUNTED) if not t.user_attrs.get(KILLED)]


def budget_callback(n_trials: int):
    """Stop a worker once the counted trials plus those still running reach n_trials."""
    def stop_when_done(study: optuna.Study, trial) -> None:
        # Trials other workers are running will count when they finish: starting another
        # one now would overshoot the budget by up to (workers - 1) trials.
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if len(counted_trials(study)) + len(running) >= n_trials:
            study.stop()
    return stop_when_done

