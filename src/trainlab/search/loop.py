"""One worker's ask-and-tell loop over the shared study.

    while the budget (and search.timeout_s) allows:
        trial = study.ask()                  # a queued trial, else a fresh one
        slot = claim_slot(study, trial)      # past the budget (a racing worker): stop
        propose(seed, slot, history) -> the values a fresh trial suggests
        fine-tune; tell COMPLETE / PRUNED / FAIL (diverged)
        Ctrl-C, or a fault of the machine (full disk, ...): re-queue, tell FAIL, stop
"""

from __future__ import annotations

import sys
import time
from typing import Callable

import optuna
from optuna.trial import TrialState

from trainlab.config import Params
from trainlab.errors import ResourceUnavailable, TrackingUnavailable, TrainingDiverged, UserError
from trainlab.io import environment_fault
from trainlab.search.study import (SURPLUS, ProposalSampler, budget_left, claim_slot, history, lose_trial,
                                   open_study, propose, requeue_interrupted)
from trainlab.search.trials import run_trial
from trainlab.processes import caused_by_interrupt, signals_held


Objective = Callable[[optuna.Trial, int], float]   # (trial, slot) -> value; may raise TrialPruned


def work(params: Params, study_name: str, parent_run_id: str | None, threads: int | None) -> None:
    """Fine-tune trials of the study `study_name` until the budget or time is spent."""
    study = open_study(params, study_name)
    run_trials(study, params,
               lambda trial, slot: run_trial(trial, slot, study_name, params, parent_run_id, threads))


def run_trials(study: optuna.Study, params: Params, objective: Objective) -> None:
    """Ask, run and tell trials until search.n_trials count or search.timeout_s is up.

    `study` must use a ProposalSampler (open_study's); any objective works, which lets
    bench/grid_vs_random.py run this very loop on a synthetic loss.
    """
    sampler = study.sampler
    if not isinstance(sampler, ProposalSampler):
        raise TypeError("run_trials: the study must be opened with a ProposalSampler")
    n_trials, started = params.search.n_trials, time.monotonic()
    while budget_left(study, n_trials) > 0 and not _timed_out(started, params.search.timeout_s):
        trial, slot = _ask_and_claim(study, n_trials)
        if slot >= n_trials:
            # Another worker started the last trial between our budget check and ask().
            trial.set_user_attr(SURPLUS, True)
            study.tell(trial, state=TrialState.FAIL)
            return
        sampler.set_proposal(lambda: propose(params, slot, history(study)))
        _run_and_tell(study, trial, slot, objective)


def _ask_and_claim(study: optuna.Study, n_trials: int) -> tuple[optuna.Trial, int]:
    """A new trial and its slot, with Ctrl-C held until both are written to the study.

    A Ctrl-C between ask() and the claim would leave a RUNNING trial no rerun resumes (its
    slot half-written, or never re-queued); held, it arrives once the slot is known, and the
    trial is re-queued like one interrupted while training.
    """
    trial = slot = None
    try:
        with signals_held():
            trial = study.ask()
            slot = claim_slot(study, trial)
    except KeyboardInterrupt:
        if trial is not None and slot is not None:
            if slot < n_trials:
                requeue_interrupted(study, trial, slot)
            study.tell(trial, state=TrialState.FAIL)
        raise
    return trial, slot


def _timed_out(started: float, timeout_s: float | None) -> bool:
    return timeout_s is not None and time.monotonic() - started >= timeout_s


def _run_and_tell(study: optuna.Study, trial: optuna.Trial, slot: int, objective: Objective) -> None:
    try:
        value = objective(trial, slot)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
    except TrainingDiverged as err:
        # A diverging trial fails alone; the study goes on with the next one.
        print(f"trial {slot}: failed: {err}", file=sys.stderr)
        study.tell(trial, state=TrialState.FAIL)
    except BaseException as err:
        if not caused_by_interrupt(err):
            _tell_failure(study, trial, slot, err)
            raise
        # Ctrl-C or SIGTERM, even one a library turned into another error on its way out.
        requeue_interrupted(study, trial, slot)   # the rerun resumes this slot from its checkpoint
        study.tell(trial, state=TrialState.FAIL)
        if isinstance(err, KeyboardInterrupt):
            raise
        raise KeyboardInterrupt(f"interrupted ({type(err).__name__}: {err})") from err
    else:
        study.tell(trial, value)


def _tell_failure(study: optuna.Study, trial: optuna.Trial, slot: int, err: BaseException) -> None:
    """A trial that failed, not interrupted: told FAIL, and the caller re-raises `err` with its
    traceback. One lost to a fault of the machine instead raises that fault's one line here."""
    fault = None
    if isinstance(err, (ResourceUnavailable, TrackingUnavailable, OSError)):
        fault = err if isinstance(err, UserError) else environment_fault(err, err.filename or f"trial {slot}")
    if fault is None:   # not the machine's fault: our bug, or the objective's own error
        study.tell(trial, state=TrialState.FAIL)
        return
    # Lost to the machine, not finished: re-queued like a killed trial, so the rerun runs
    # this slot again once the fault is mended instead of counting it as failed.
    lose_trial(study, trial, slot, str(fault))
    raise fault from None
