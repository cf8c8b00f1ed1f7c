"""Hyperparameter search on Optuna: seeded grid/random/TPE, pruning, parallel workers, resume."""

from trainlab.search.runner import publish_top_k, run_search, study_counts, top_trials
from trainlab.search.space import check_space, grid

__all__ = ["check_space", "grid", "publish_top_k", "run_search", "study_counts", "top_trials"]
