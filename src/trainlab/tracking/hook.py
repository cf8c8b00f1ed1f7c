"""The engine hook that streams a training run's metrics into its MLflow run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainlab.engine.hooks import Hook, LoopState, MetricRows
from trainlab.tracking.epoch_axis import epoch_metrics, step_rows

if TYPE_CHECKING:   # for the annotation only: run.py imports this module (training_hooks)
    from trainlab.tracking.run import StageRun


class TrackingHook(Hook):
    """Step metrics arrive in batches and are buffered; each epoch end writes them out."""

    def __init__(self, run: StageRun):
        self.run = run

    def on_fit_start(self, state: LoopState) -> None:
        self.run.set_tags({"device": str(state.runtime.device), "precision": state.runtime.precision,
                           "world_size": state.runtime.world_size,
                           "torch.threads": __import__("torch").get_num_threads()})

    def on_metrics(self, state: LoopState, rows: MetricRows) -> None:
        self.run.log_metric_rows(step_rows(rows))

    def on_epoch_end(self, state: LoopState, metrics: dict[str, float]) -> None:
        # Epoch N at step N (1-based, as DVC's curves), train/loss beside val/loss: epoch_axis.py.
        self.run.log_metrics(*epoch_metrics(metrics, state.epoch))
        self.run.flush()   # one log_batch per epoch keeps the UI's curves live
