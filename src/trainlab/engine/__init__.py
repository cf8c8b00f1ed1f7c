"""The training engine: one `fit()` with typed hooks. Knows nothing of MLflow, DVC or Click."""

from trainlab.engine.batches import TrainData
from trainlab.engine.checkpoint import Checkpointing
from trainlab.engine.hooks import BestSoFar, Hook, Hooks, LoopState, MetricRows
from trainlab.engine.loop import FitResult, evaluate, fit
from trainlab.engine.optim import ParamGroup, Schedule, build_optimizer
from trainlab.engine.runtime import Runtime, seed_everything, setup_runtime, teardown_runtime

__all__ = [
    "BestSoFar", "Checkpointing", "FitResult", "Hook", "Hooks", "LoopState", "MetricRows", "ParamGroup",
    "Runtime", "Schedule", "TrainData", "build_optimizer", "evaluate", "fit", "seed_everything",
    "setup_runtime", "teardown_runtime",
]
