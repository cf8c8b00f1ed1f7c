"""The Optuna study: storage, per-slot seeded proposals, pruners, slots and recovery after a kill.

Every trial gets a *slot*: its position in the sequence of trials that count. What a
fresh trial tries is proposed by a sampler seeded with (search.seed, slot) in a scratch
in-memory study that holds the finished trials (TPE learns from them), and a trial
killed with its process is re-queued with its slot and params. So a search killed and
resumed proposes the same trials, in the same order, as one never interrupted (with
one worker). Only Optuna's public API is used: ask/tell, enqueue_trial, user attrs,
add_trials and a user-defined sampler.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from trainlab import paths
from trainlab.config import Params
from trainlab.errors import ResourceUnavailable
from trainlab.processes import pid_alive
from trainlab.search.space import grid, suggest

# Trial user attributes: the slot; the process running it; set on a re-queued trial, the
# number of the killed trial it replaces; set on a trial Ctrl-C stopped; a trial asked
# for after the budget was spent (by a racing worker), which never runs; set on a trial a
# fault of the machine stopped (a full disk, ...), the fault.
SLOT, HOST, PID, RETRY_OF, KILLED, SURPLUS = "slot", "host", "pid", "retry_of", "killed", "surplus"
LOST = "lost_to"
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def storage_url(params: Params) -> str | optuna.storages.BaseStorage:
    """search.storage, else a journal file kept across runs (safe for parallel local workers)."""
    if params.search.storage:
        return params.search.storage
    paths.SEARCH_STORAGE.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend

    from trainlab.search.journal import repair_journal

    repair_journal(paths.SEARCH_STORAGE)   # before anything appends: a torn last record is cut off
    # An absolute path: Optuna's lock is a symlink to the journal, and a process killed while
    # holding it leaves it behind. Optuna frees such a lock after its grace period (30 s) by
    # stat()ing the link's target, which a relative target (resolved from the link's own
    # folder) never reaches: the next search would wait on it forever.
    try:
        return optuna.storages.JournalStorage(JournalFileBackend(str(paths.SEARCH_STORAGE.resolve())))
    except (KeyError, ValueError, TypeError, AssertionError, AttributeError, IndexError) as err:
        # Every line is a record, but Optuna cannot replay them: edited, not torn.
        raise ResourceUnavailable(f"{paths.SEARCH_STORAGE}: Optuna cannot replay it ({type(err).__name__}: "
                                  f"{str(err)[:120]}); a record in it was changed, not torn: restore the file, "
                                  f"or move it away to start every study in it afresh") from None


def storage_label(params: Params) -> str:
    """Where the study is stored, for people: the journal path or the RDB URL without its password."""
    if params.search.storage:
        return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", params.search.storage)
    return str(paths.SEARCH_STORAGE)


def load_study_call(params: Params, name: str) -> str:
    """The Python call that opens study `name` where this search keeps it (the stage prints it).

    Journal storage needs `from optuna.storages import JournalStorage` and
    `from optuna.storages.journal import JournalFileBackend`; an RDB URL is shown without its password.
    """
    storage = (repr(storage_label(params)) if params.search.storage
               else f"JournalStorage(JournalFileBackend({str(paths.SEARCH_STORAGE)!r}))")
    return f"optuna.load_study(study_name={name!r}, storage={storage})"


def open_study(params: Params, name: str) -> optuna.Study:
    """Create or load the study `name`; one direction: minimise val/loss or maximise val/acc."""
    return optuna.create_study(study_name=name, storage=storage_url(params), direction=direction(params),
                               sampler=ProposalSampler(), pruner=make_pruner(params), load_if_exists=True)


def direction(params: Params) -> str:
    return "minimize" if params.search.metric.endswith("loss") else "maximize"


def make_pruner(params: Params) -> optuna.pruners.BasePruner:
    if params.search.pruner == "median":
        # Steps are epochs counted from 1 (trials.PruningHook): no pruning before epoch 4.
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=4)
    if params.search.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=4, reduction_factor=3)
    return optuna.pruners.NopPruner()


class ProposalSampler(optuna.samplers.BaseSampler):
    """Serves the values `propose` chose for the trial at hand; it never draws by itself.

    The proposal is computed lazily, on the first suggest, so a queued trial (a grid point
    or a re-queued killed trial, whose params Optuna fixes) costs no proposal.
    """

    def __init__(self) -> None:
        self._make: Callable[[], dict[str, Any]] | None = None
        self._values: dict[str, Any] | None = None

    def set_proposal(self, make: Callable[[], dict[str, Any]]) -> None:
        self._make, self._values = make, None

    def infer_relative_search_space(self, study, trial) -> dict:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict:
        return {}

    def sample_independent(self, study, trial, param_name: str, param_distribution) -> Any:
        if self._values is None:
            if self._make is None:
                raise RuntimeError("ProposalSampler: set_proposal() was not called for this trial")
            self._values = self._make()
        return self._values[param_name]


def proposal_seed(seed: int, slot: int) -> int:
    return seed * 10_007 + slot


def propose(params: Params, slot: int, history: list[FrozenTrial]) -> dict[str, Any]:
    """The values slot `slot` tries: a sampler seeded by (search.seed, slot) that sees `history`."""
    cfg = params.search
    seed = proposal_seed(cfg.seed, slot)
    if cfg.sampler == "tpe":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=min(5, cfg.n_trials), multivariate=True)
    else:
        # random; grid enqueues its points up front and only proposes past the grid's end.
        sampler, history = optuna.samplers.RandomSampler(seed=seed), []
    scratch = optuna.create_study(direction=direction(params), sampler=sampler)
    scratch.add_trials(history)
    return suggest(scratch.ask(), cfg.space)


def history(study: optuna.Study) -> list[FrozenTrial]:
    """The counted finished trials, by slot: what a TPE proposal learns from."""
    return sorted(counted_trials(study), key=lambda t: int(t.user_attrs[SLOT]))


def killed_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of trials killed with their process (each was replaced by a re-queued copy)."""
    return {int(t.user_attrs[RETRY_OF]) for t in trials if RETRY_OF in t.user_attrs}


def counted_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Finished trials that use up the budget (killed and surplus ones do not)."""
    trials = study.get_trials(deepcopy=False)
    killed = killed_numbers(trials)
    return [t for t in trials if t.state in COUNTED and SLOT in t.user_attrs
            and t.number not in killed and not t.user_attrs.get(SURPLUS)]


def budget_left(study: optuna.Study, n_trials: int) -> int:
    """Trials still to start: n_trials minus the counted ones and those running now."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return n_trials - len(counted_trials(study)) - len(running)


def claim_slot(study: optuna.Study, trial: optuna.Trial) -> int:
    """A queued trial keeps its slot; a fresh one takes the next free slot, race-free.

    Workers may ask for trials at the same moment. Fresh trials that have no slot yet
    take the free slots in the order of their trial numbers (which the storage assigns
    atomically), so two of them never claim the same slot, whoever reads first.
    """
    attrs = trial.user_attrs
    if SLOT in attrs:
        slot = int(attrs[SLOT])
    else:
        trials = study.get_trials(deepcopy=False)
        killed = killed_numbers(trials)
        taken = {int(t.user_attrs[SLOT]) for t in trials if SLOT in t.user_attrs and t.number not in killed}
        ahead = sum(1 for t in trials if t.number < trial.number and t.state == TrialState.RUNNING
                    and SLOT not in t.user_attrs)
        free = (s for s in itertools.count() if s not in taken)
        slot = next(itertools.islice(free, ahead, None))
        trial.set_user_attr(SLOT, slot)
    # PID before HOST: recover_killed (another process) takes a RUNNING trial of this host
    # without a live PID for dead, so a trial must never show its host without its pid.
    trial.set_user_attr(PID, os.getpid())
    trial.set_user_attr(HOST, socket.gethostname())
    return slot


def queue_grid(study: optuna.Study, params: Params) -> int:
    """Grid search: enqueue every grid point not yet queued, in a fixed order. Returns the grid size."""
    points = grid(params.search.space, params.search.grid_points)
    trials = study.get_trials(deepcopy=False)
    killed = killed_numbers(trials)
    queued = {int(t.user_attrs[SLOT]) for t in trials if SLOT in t.user_attrs and t.number not in killed}
    for slot, point in enumerate(points[: params.search.n_trials]):
        if slot not in queued:
            study.enqueue_trial(point, user_attrs={SLOT: slot})
    return len(points)


def recover_killed(study: optuna.Study) -> list[int]:
    """Trials left RUNNING by a dead process on this host become FAIL and are re-queued.

    The copy is queued first and names the dead trial (RETRY_OF), which is what marks
    the dead one as killed; a recovery interrupted between the two steps is finished by
    the next one. Callers on one host serialise this with a file lock (see runner).
    """
    host, requeued = socket.gethostname(), []
    trials = study.get_trials(deepcopy=False)
    killed = killed_numbers(trials)
    for trial in trials:
        attrs = trial.user_attrs
        if trial.state != TrialState.RUNNING or attrs.get(HOST) != host or pid_alive(int(attrs.get(PID, 0))):
            continue
        if SLOT in attrs and trial.number not in killed:
            study.enqueue_trial(trial.params, user_attrs={SLOT: attrs[SLOT], RETRY_OF: trial.number})
            requeued.append(int(attrs[SLOT]))
        study.tell(trial.number, state=TrialState.FAIL)
    return requeued


def requeue_interrupted(study: optuna.Study, trial: optuna.Trial, slot: int) -> None:
    """A trial stopped by Ctrl-C or SIGTERM: re-queued with its slot and params, like a killed one.

    Without the re-queue it would use up the budget and the rerun would skip its slot
    instead of resuming it from its checkpoint. The caller then tells it FAIL.
    """
    trial.set_user_attr(KILLED, True)
    study.enqueue_trial(trial.params, user_attrs={SLOT: slot, RETRY_OF: trial.number})


def lose_trial(study: optuna.Study, trial: optuna.Trial, slot: int, fault: str) -> None:
    """A trial a fault of the machine stopped: re-queued with its slot and told FAIL, like a
    killed one, so it never counts as finished and the rerun runs its slot again.

    On a full disk the storage may refuse these writes too (the journal's OSError, an RDB's
    "disk is full"); the trial then stays RUNNING with a dead pid, the next search
    re-queues it (recover_killed), and the fault itself is what the stage reports.
    """
    try:
        trial.set_user_attr(LOST, fault[:500])
        study.enqueue_trial(trial.params, user_attrs={SLOT: slot, RETRY_OF: trial.number})
        study.tell(trial, state=TrialState.FAIL)
    except Exception:   # noqa: BLE001 - see above: recovered by the next search
        pass


def lost_slots(study: optuna.Study) -> dict[int, str]:
    """Slots lost to a fault of the machine that no finished trial filled since (the search
    timed out first, say): slot -> the fault."""
    done = {int(t.user_attrs[SLOT]) for t in counted_trials(study)}
    return {int(t.user_attrs[SLOT]): str(t.user_attrs[LOST]) for t in study.get_trials(deepcopy=False)
            if LOST in t.user_attrs and SLOT in t.user_attrs and int(t.user_attrs[SLOT]) not in done}


