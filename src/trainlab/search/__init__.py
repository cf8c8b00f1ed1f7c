"""Hyperparameter search on Optuna: seeded grid/random/TPE, pruning, parallel workers, resume.

The names below load their submodule on first use (PEP 562), so `trainlab search` can import
`trainlab.search.workers` and start its workers' fork server before torch and Optuna load here.
"""

from importlib import import_module
from typing import Any

_HOMES = {"study_name": "identity", "publish_study": "publish", "publishing": "publish", "study_counts": "publish",
          "top_trials": "publish", "run_search": "runner", "check_space": "space", "grid": "space"}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(f"trainlab.search.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'trainlab.search' has no attribute {name!r}")
