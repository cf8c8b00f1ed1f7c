"""The one door to MLflow: stage runs, buffered metrics, artifacts, and the engine hook."""

from trainlab.tracking.run import StageRun, check_reachable, resolve_uri

__all__ = ["StageRun", "check_reachable", "resolve_uri"]
