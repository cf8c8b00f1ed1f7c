"""Run a study with N local worker processes, then keep the top-k models and the summary."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import warnings
import tempfile
from pathlib import Path

import optuna
from optuna.trial import TrialState

from trainlab.config import Params
from trainlab.errors import TrainingDiverged, UserError
from trainlab.search.space import check_space
from trainlab.search.study import (SLOT, budget_callback, counted_trials, open_study, queue_grid,
                                   recover_killed)
from trainlab.search.trials import run_trial, trial_model_path


def prepare_study(params: Params) -> optuna.Study:
    """Check the space, open the study, re-queue killed trials, enqueue the grid."""
    check_space(params)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = open_study(params)
    recover_killed(study)
    if params.search.sampler == "grid":
        queue_grid(study, params)
    return study


def remaining(study: optuna.Study, params: Params) -> int:
    return max(0, params.search.n_trials - len(counted_trials(study)))


class _QuietAfterInterrupt(logging.Filter):
    """Ctrl-C in a trial: optuna would log its traceback and a 'trial failed' line; the
    trial is re-queued (not failed) and the CLI prints one line, so they are dropped."""

    interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is KeyboardInterrupt:
            self.interrupted = True
        return not self.interrupted


def work(params: Params, parent_run_id: str | None, threads: int | None) -> None:
    """One worker: take trials from the shared study until the budget or time is spent."""
    optimize_log = logging.getLogger("optuna.study._optimize")
    for old in [f for f in optimize_log.filters if isinstance(f, _QuietAfterInterrupt)]:
        optimize_log.removeFilter(old)
    optimize_log.addFilter(_QuietAfterInterrupt())
    study = open_study(params)
    left = remaining(study, params)
    if left == 0:
        return
    study.optimize(lambda trial: run_trial(trial, params, parent_run_id, threads), n_trials=left,
                   timeout=params.search.timeout_s, catch=(TrainingDiverged,),
                   callbacks=[budget_callback(params.search.n_trials)])


def _worker_main(params: Params, parent_run_id: str | None, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)   # a spawned process starts at INFO
    try:
        work(params, parent_run_id, threads)
    except UserError as err:
        raise SystemExit(f"search worker: {err}") from None


def run_search(params: Params, parent_run_id: str | None) -> optuna.Study:
    """Run the study in this process (1 worker) or in N spawned processes sharing its storage."""
    study = prepare_study(params)
    workers = params.search.workers
    threads = max(1, (params.trainer.threads or os.cpu_count() or 1) // workers)
    if workers == 1:
        work(params, parent_run_id, params.trainer.threads)
        return study
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_worker_main, args=(params, parent_run_id, threads))
             for _ in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed:
        raise UserError(f"search: {len(failed)} worker(s) failed (exit codes {failed}); see their messages above")
    return study


def top_trials(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    """The k best completed trials, best first (ties broken by slot, for a stable order)."""
    done = [t for t in counted_trials(study) if t.state == TrialState.COMPLETE and t.value is not None]
    sign = 1 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1
    return sorted(done, key=lambda t: (sign * t.value, int(t.user_attrs[SLOT])))[:k]


def publish_top_k(trials: list[optuna.trial.FrozenTrial], out: Path) -> list[dict]:
    """Copy the top-k trial models into `out` (swapped in atomically) with an index."""
    import json

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    members = []
    for rank, trial in enumerate(trials, start=1):
        slot = int(trial.user_attrs[SLOT])
        name = f"top{rank}.pt"
        shutil.copyfile(trial_model_path(slot), staging / name)
        members.append({"rank": rank, "file": name, "slot": slot, "value": trial.value, "params": trial.params})
    (staging / "members.json").write_text(json.dumps(members, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    return members


def study_counts(study: optuna.Study) -> dict[str, int]:
    trials = counted_trials(study)
    failed = sum(t.state == TrialState.FAIL for t in trials)
    return {"trials/complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "trials/pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "trials/failed": failed,
            "trials/killed_and_retried": sum(bool(t.user_attrs.get("killed")) for t in study.get_trials(deepcopy=False))}
