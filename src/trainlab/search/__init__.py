"""Hyperparameter search on Optuna: seeded grid/random/TPE, pruning, parallel workers, resume."""

from trainlab.search.identity import study_name
from trainlab.search.publish import publish_study, publishing, study_counts, top_trials
from trainlab.search.runner import run_search
from trainlab.search.space import check_space, grid

__all__ = ["check_space", "grid", "publish_study", "publishing", "run_search", "study_counts", "study_name", "top_trials"]
