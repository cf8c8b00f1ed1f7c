"""The engine hook that streams a training run's metrics into its MLflow run.

It lives with the training layer, not in `trainlab.tracking`: tracking knows nothing of
the engine, and this hook is where the two meet.
"""

from __future__ import annotations

from time import monotonic
from trainlab.engine.hooks import Hook, LoopState, MetricRows
from trainlab.tracking import NullRun, StageRun
from trainlab.tracking.epoch_axis import epoch_metrics, step_rows

# Buffered metrics are written at the first epoch end this long after the last write, and
# when the fit ends. A write per epoch cost a search trial of 60 short epochs 0.3 s of CPU
# in SQLAlchemy, a tenth of the trial, against 0.04 s for one write (bench/RESULTS.md,
# section 5). Every few seconds still keeps the UI's curves live, and a resumed run's
# points from before the kill are backfilled from its checkpoint.
LIVE_WRITE_EVERY_S = 5.0


class TrackingHook(Hook):
    """Step and epoch metrics are buffered and written every LIVE_WRITE_EVERY_S seconds."""

    def __init__(self, run: StageRun):
        self.run = run
        self.last_write = monotonic()

    def on_fit_start(self, state: LoopState) -> None:
        self.run.set_tags({"device": str(state.runtime.device), "precision": state.runtime.precision,
                           "world_size": state.runtime.world_size,
                           "torch.threads": __import__("torch").get_num_threads()})
        self.last_write = monotonic()

    def on_metrics(self, state: LoopState, rows: MetricRows) -> None:
        self.run.log_metric_rows(step_rows(rows))

    def on_epoch_end(self, state: LoopState, metrics: dict[str, float]) -> None:
        # Epoch N at step N (1-based, as DVC's curves), train/loss beside val/loss: epoch_axis.py.
        self.run.log_metrics(*epoch_metrics(metrics, state.epoch))
        if monotonic() - self.last_write >= LIVE_WRITE_EVERY_S:
            self.write()

    def on_fit_end(self, state: LoopState) -> None:
        self.write()

    def write(self) -> None:
        self.run.flush()
        self.last_write = monotonic()


def tracking_hooks(run: StageRun | NullRun) -> list[Hook]:
    """Engine hooks that stream a fit() into `run` (none on the ranks that do not log)."""
    return [] if isinstance(run, NullRun) else [TrackingHook(run)]
