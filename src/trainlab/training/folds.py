"""The pieces of k-fold selection: folds, each fold's predictions per epoch, the chosen epoch.

Below `selection.cv_below` validation samples a handful of samples cannot rank anything
(six samples give accuracies in steps of 17 points), so the labelled data (train + val)
is split into `selection.folds` stratified folds: each fold is predicted by a model
trained on the others, every epoch. The epoch whose pooled out-of-fold predictions score
best is kept, and the final model is refit on all labelled data for exactly that many
epochs (`trainlab.training.cross_validation`). The refit model is the one shipped; its
out-of-fold predictions stand in for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from trainlab.config import Params
from trainlab.engine import Hook, LoopState, TrainData
from trainlab.heldout import HeldOut, predict_outputs

def uses_cv(params: Params, val_size: int) -> bool:
    return val_size < params.selection.cv_below


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Held-out indices of each fold; fewer folds when the rarest class has fewer members.
    A regression target is stratified by its quantile bins (`trainlab.data.splits.strata`)."""
    from sklearn.model_selection import StratifiedKFold

    from trainlab.data.splits import strata

    y = strata(y)
    rarest = int(np.bincount(y).min(initial=len(y)) if len(y) else 0)
    k = max(2, min(folds, rarest)) if rarest >= 2 else 2
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    if rarest < 2:   # a class with one sample cannot be stratified: plain shuffled folds
        from sklearn.model_selection import KFold

        splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
    return [held for _, held in splitter.split(np.zeros(len(y)), y)]


class EpochPredictions(Hook):
    """Records the model's outputs on one fold's held-out samples after every epoch (the
    weights the epoch validated: under trainer.averaging, the average's)."""

    def __init__(self, x: Any, regression: bool = False):
        self.x = x
        self.regression = regression
        self.per_epoch: list[np.ndarray] = []

    def on_epoch_end(self, state: LoopState, metrics: dict[str, float]) -> None:
        outputs = predict_outputs(state.evaluated, self.x, self.regression, state.runtime.device)
        self.per_epoch.append(outputs.astype(np.float32))

    def state_dict(self) -> dict[str, Any]:
        return {"per_epoch": [torch.from_numpy(p) for p in self.per_epoch]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.per_epoch = [p.numpy() for p in state["per_epoch"]]


class StopAfter(Hook):
    """Ends training after a fixed number of epochs (the refit's length chosen by CV)."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_epoch_end(self, state: LoopState, metrics: dict[str, float]) -> None:
        if state.epoch + 1 >= self.epochs:
            state.should_stop = True
            state.stop_reason = self.reason(self.epochs)

    @staticmethod
    def reason(epochs: int) -> str:
        return f"stopped after epoch {epochs}, chosen by cross-validation"


def pooled_per_epoch(fold_held: list[np.ndarray], fold_probs: list[list[np.ndarray]], n: int) -> list[np.ndarray]:
    """Out-of-fold outputs of all n samples, one array per epoch."""
    epochs = min(len(p) for p in fold_probs)
    pooled = []
    for epoch in range(epochs):
        probs = np.zeros((n, fold_probs[0][epoch].shape[1]))
        for held, per_epoch in zip(fold_held, fold_probs):
            probs[held] = per_epoch[epoch]
        pooled.append(probs)
    return pooled


def choose_epoch(pooled: list[np.ndarray], y: np.ndarray, monitor: str, enabled: bool,
                 candidates: list[int] | None = None) -> int:
    """The epoch to keep: best pooled out-of-fold loss (or accuracy, loss breaking ties),
    among `candidates` (default: every epoch)."""
    epochs = [e for e in (candidates or range(len(pooled))) if e < len(pooled)] or list(range(len(pooled)))
    if not enabled:
        return len(pooled) - 1
    losses = {e: HeldOut("cv", pooled[e], y).loss for e in epochs}
    if monitor == "val/acc" and not HeldOut("cv", pooled[0], y).regression:
        accs = {e: float((pooled[e].argmax(1) == y).mean()) for e in epochs}
        return min(epochs, key=lambda e: (-accs[e], losses[e], e))
    return min(epochs, key=lambda e: (losses[e], e))


def concat(a: TrainData, b: TrainData) -> TrainData:
    return TrainData(np.concatenate([np.asarray(a.x), np.asarray(b.x)]),
                     np.concatenate([np.asarray(a.y), np.asarray(b.y)]))


def subset(data: TrainData, index: np.ndarray) -> TrainData:
    return TrainData(np.asarray(data.x)[index], np.asarray(data.y)[index])


