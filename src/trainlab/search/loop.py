"""One worker's ask-and-tell loop over the shared study.

    while the budget (and search.timeout_s) allows:
        trial = study.ask()                  # a queued trial, else a fresh one
        slot = claim_slot(study, trial)      # past the budget (a racing worker): stop
        propose(seed, slot, history) -> the values a fresh trial suggests
        fine-tune; tell COMPLETE / PRUNED / FAIL (diverged); Ctrl-C: re-queue, tell FAIL
"""

from __future__ import annotations

import sys
import time

import optuna
from optuna.trial import TrialState

from trainlab.config import Params
from trainlab.errors import TrainingDiverged
from trainlab.search.study import (SURPLUS, ProposalSampler, budget_left, claim_slot, history, open_study,
                                   propose, requeue_interrupted)
from trainlab.search.trials import run_trial


def work(params: Params, study_name: str, parent_run_id: str | None, threads: int | None) -> None:
    """Take trials from the study `study_name` until the budget or time is spent."""
    study = open_study(params, study_name)
    sampler = study.sampler
    assert isinstance(sampler, ProposalSampler)
    n_trials, started = params.search.n_trials, time.monotonic()
    while budget_left(study, n_trials) > 0 and not _timed_out(started, params.search.timeout_s):
        trial = study.ask()
        slot = claim_slot(study, trial)
        if slot >= n_trials:
            # Another worker started the last trial between our budget check and ask().
            trial.set_user_attr(SURPLUS, True)
            study.tell(trial, state=TrialState.FAIL)
            return
        sampler.set_proposal(lambda: propose(params, slot, history(study)))
        _run_and_tell(study, trial, slot, params, parent_run_id, threads)


def _timed_out(started: float, timeout_s: float | None) -> bool:
    return timeout_s is not None and time.monotonic() - started >= timeout_s


def _run_and_tell(study: optuna.Study, trial: optuna.Trial, slot: int, params: Params,
                  parent_run_id: str | None, threads: int | None) -> None:
    try:
        value = run_trial(trial, slot, study.study_name, params, parent_run_id, threads)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
    except TrainingDiverged as err:
        # A diverging trial fails alone; the study goes on with the next one.
        print(f"trial {slot}: failed: {err}", file=sys.stderr)
        study.tell(trial, state=TrialState.FAIL)
    except KeyboardInterrupt:
        requeue_interrupted(study, trial, slot)   # the rerun resumes this slot from its checkpoint
        study.tell(trial, state=TrialState.FAIL)
        raise
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    else:
        study.tell(trial, value)
