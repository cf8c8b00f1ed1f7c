"""The one door to MLflow: stage runs, buffered metrics, artifacts, models and the registry.

A leaf of the project: it imports nothing of trainlab but config, errors, hashing, io,
paths and processes (tests/test_import_rules.py). The engine hook that feeds a run from
a fit() is on the training side (`trainlab.training.tracking_hook`).
"""

from trainlab.tracking.run import NullRun, StageRun, check_reachable, open_stage_run, resolve_uri

__all__ = ["NullRun", "StageRun", "check_reachable", "open_stage_run", "resolve_uri"]
