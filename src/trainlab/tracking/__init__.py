"""The one door to MLflow: stage runs, buffered metrics, artifacts, and the engine hook."""

from trainlab.tracking.run import NullRun, StageRun, check_reachable, open_stage_run, resolve_uri



def __getattr__(name: str):
    # The hook pulls in the engine (torch); stages that do not train should not pay for it.
    if name == "TrackingHook":
        from trainlab.tracking.hook import TrackingHook

        return TrackingHook
    raise AttributeError(name)


__all__ = ["NullRun", "StageRun", "TrackingHook", "check_reachable", "open_stage_run", "resolve_uri"]
