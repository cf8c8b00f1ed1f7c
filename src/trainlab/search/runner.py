"""Run a study: check the space, open it, recover killed trials, then 1 worker here or N processes."""

from __future__ import annotations

import os
import warnings

import optuna

from trainlab import paths
from trainlab.config import Params
from trainlab.data import task_info
from trainlab.errors import ParamsError
from trainlab.search.loop import work
from trainlab.search.space import check_space
from trainlab.processes import host_lock
from trainlab.search.study import open_study, queue_grid, recover_killed
from trainlab.search.summary import import_plotting
from trainlab.search.workers import run_workers


def prepare_study(params: Params, study_name: str) -> optuna.Study:
    """Check the space, open the study, re-queue killed trials, enqueue the grid."""
    check_space(params)
    if params.search.metric == "val/acc" and task_info(paths.PREPARED, "target").regression:
        raise ParamsError("search.metric: val/acc needs class labels, but the target is a number to predict "
                          "(regression); use val/loss (the mean squared error)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = open_study(params, study_name)
    # Two searches starting at once on this host must not both re-queue a killed trial.
    with host_lock(paths.SEARCH_RECOVER_LOCK):
        recover_killed(study)
        if params.search.sampler == "grid":
            queue_grid(study, params)
    return study


def run_search(params: Params, study_name: str, parent_run_id: str | None) -> optuna.Study:
    """Run the study in this process (1 worker) or in N worker processes sharing its storage."""
    study = prepare_study(params, study_name)
    workers = params.search.workers
    if workers == 1:
        work(params, study_name, parent_run_id, params.trainer.threads)
    else:
        threads = max(1, (params.trainer.threads or os.cpu_count() or 1) // workers)
        # This process only waits for the workers meanwhile: it imports what publishing needs.
        run_workers(params, study_name, parent_run_id, workers, threads, while_waiting=import_plotting)
    return study
