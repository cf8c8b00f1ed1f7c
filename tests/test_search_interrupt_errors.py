"""A Ctrl-C that a library turns into another error still re-queues the trial it stopped.

Seen in CI: Ctrl-C landed in a search worker inside Optuna's journal-file lock, between its
unlink of the lock file and its return; its handler unlinked the file again and raised
FileNotFoundError, so the trial was told FAIL as an error and its slot was lost to the rerun.
The same objective raising on its own, with no interrupt behind it, still fails as an error.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from trainlab.config import Params, with_overrides
from trainlab.processes import caused_by_interrupt
from trainlab.search.loop import run_trials
from trainlab.search.study import KILLED, RETRY_OF, SLOT, ProposalSampler


def lock_release_interrupted(trial: optuna.Trial, slot: int) -> float:
    """What Optuna's JournalFileSymlinkLock.release does when Ctrl-C lands after its unlink."""
    try:
        raise KeyboardInterrupt
    except BaseException:
        raise FileNotFoundError(2, "No such file or directory", "study.journal.lock-x.rename") from None


def missing_file(trial: optuna.Trial, slot: int) -> float:
    raise FileNotFoundError(2, "No such file or directory", "data/prepared/missing.npz")


def study_after(objective) -> tuple[list[optuna.trial.FrozenTrial], BaseException]:
    params = with_overrides(Params(), {"search.n_trials": 2})
    study = optuna.create_study(direction="minimize", sampler=ProposalSampler())
    with pytest.raises(BaseException) as caught:
        run_trials(study, params, objective)
    return study.get_trials(deepcopy=False), caught.value


def test_an_interrupt_raised_as_another_error_requeues_the_trial() -> None:
    trials, raised = study_after(lock_release_interrupted)
    assert isinstance(raised, KeyboardInterrupt)   # the worker ends as interrupted, not crashed
    stopped, copy = trials
    assert stopped.state == TrialState.FAIL and stopped.user_attrs[KILLED] is True
    assert copy.state == TrialState.WAITING
    assert copy.user_attrs[RETRY_OF] == stopped.number and copy.user_attrs[SLOT] == stopped.user_attrs[SLOT] == 0


def test_the_same_error_without_an_interrupt_fails_the_trial_as_an_error() -> None:
    trials, raised = study_after(missing_file)
    assert isinstance(raised, FileNotFoundError)
    assert [(t.state, KILLED in t.user_attrs) for t in trials] == [(TrialState.FAIL, False)]


def test_caused_by_interrupt_follows_the_exception_context() -> None:
    with pytest.raises(FileNotFoundError) as caught:
        lock_release_interrupted(None, 0)
    assert caught.value.__cause__ is None   # `from None` hides the cause, not the context
    assert caused_by_interrupt(caught.value) and caused_by_interrupt(KeyboardInterrupt())
    assert not caused_by_interrupt(FileNotFoundError(2, "gone"))
