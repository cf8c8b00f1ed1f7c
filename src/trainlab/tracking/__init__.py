"""The one door to MLflow: stage runs, buffered metrics, artifacts, and the engine hook."""

from trainlab.tracking.hook import TrackingHook
from trainlab.tracking.run import NullRun, StageRun, check_reachable, open_stage_run, resolve_uri

__all__ = ["NullRun", "StageRun", "TrackingHook", "check_reachable", "open_stage_run", "resolve_uri"]
