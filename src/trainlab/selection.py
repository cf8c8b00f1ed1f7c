"""Held-out predictions, and model selection that a small validation split cannot fool.

Every target-task training leaves `HeldOut` predictions: class probabilities on
labelled samples the model was not trained on. They drive everything that chooses:
the epoch to keep, the search's ranking, the ensemble's members and the temperature.

With a validation split of `selection.cv_below` samples or more they are the final
model's predictions on it. Below that, a handful of samples cannot rank anything (six
samples give accuracies in steps of 17 points), so the labelled data (train + val) is
split into `selection.folds` stratified folds: each fold is predicted by a model trained
on the others, every epoch. The epoch whose pooled out-of-fold predictions score best is
kept, and the final model is refit on all labelled data for exactly that many epochs.
The refit model is the one shipped; its out-of-fold predictions stand in for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainlab.calibration import apply_temperature, heldout_loss
from trainlab.config import Params
from trainlab.engine import Hook, LoopState, TrainData

EVAL_BATCH = 2048


@dataclass
class HeldOut:
    """Predictions on held-out labelled samples, with their labels.

    Classification: `outputs` are probabilities (n, classes), `y` class indices.
    Regression: `outputs` are predictions (n, 1) and `y` targets, both in the standardised
    units prepare gave the target (`trainlab.data.build.standardize_target`)."""

    kind: str                 # "val" (the validation split) or "cv" (out-of-fold)
    outputs: np.ndarray
    y: np.ndarray
    folds: int = 0

    @property
    def regression(self) -> bool:
        return bool(np.issubdtype(self.y.dtype, np.floating))

    @property
    def loss(self) -> float:
        """Negative log-likelihood of the true classes, or the mean squared error."""
        return heldout_loss(self.outputs, self.y)

    @property
    def acc(self) -> float:
        return float((self.outputs.argmax(1) == self.y).mean())

    @property
    def score(self) -> float:
        """Higher is better: accuracy, or R^2 (1 - squared error / the target's variance)."""
        if self.regression:
            return 1.0 - self.loss / max(float(np.var(self.y)), 1e-12)
        return self.acc

    @property
    def score_name(self) -> str:
        return "r2" if self.regression else "acc"

    def calibrated(self, temperature: float) -> "HeldOut":
        """Probabilities rescaled by `temperature` (a regression's predictions are left as they are)."""
        if self.regression:
            return self
        return HeldOut(self.kind, apply_temperature(self.outputs, temperature), self.y, self.folds)

    def describe(self) -> str:
        if self.kind == "cv":
            return f"{self.folds}-fold CV over {len(self.y)} labelled samples"
        return f"validation split of {len(self.y)} samples"

    def to_json(self) -> dict[str, Any]:
        # Rounded: 6 digits are far below any selection difference and keep the file small.
        y = self.y.astype(float if self.regression else int)
        return {"kind": self.kind, "folds": self.folds, "y": np.round(y, 6).tolist() if self.regression
                else y.tolist(), "outputs": np.round(self.outputs.astype(np.float64), 6).tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "HeldOut":
        y = np.asarray(data["y"])
        return cls(data["kind"], np.asarray(data["outputs"], dtype=np.float64),
                   y.astype(np.float64 if y.dtype.kind == "f" else np.int64), int(data.get("folds", 0)))


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


@torch.inference_mode()
def predict_outputs(model: torch.nn.Module, x: Any, regression: bool = False,
                    device: torch.device | None = None) -> np.ndarray:
    """Softmax outputs of `model` on `x`, or its raw predictions for a regression target
    (eval mode restored afterwards)."""
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    outs = [model(chunk.to(device)).float() for chunk in x.split(EVAL_BATCH)]
    model.train(was_training)
    out = torch.cat(outs)
    return (out if regression else out.softmax(-1)).cpu().numpy().astype(np.float64)


class EpochPredictions(Hook):
    """Records the model's outputs on one fold's held-out samples after every epoch."""

    def __init__(self, x: Any, regression: bool = False):
        self.x = x
        self.regression = regression
        self.per_epoch: list[np.ndarray] = []

    def on_epoch_end(self, state: LoopState, metrics: dict[str, float]) -> None:
        outputs = predict_outputs(state.model, self.x, self.regression, state.runtime.device)
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


def choose_epoch(pooled: list[np.ndarray], y: np.ndarray, monitor: str, enabled: bool) -> int:
    """The epoch to keep: best pooled out-of-fold loss (or accuracy, loss breaking ties)."""
    if not enabled:
        return len(pooled) - 1
    losses = [HeldOut("cv", p, y).loss for p in pooled]
    if monitor == "val/acc" and not HeldOut("cv", pooled[0], y).regression:
        accs = [float((p.argmax(1) == y).mean()) for p in pooled]
        return min(range(len(pooled)), key=lambda e: (-accs[e], losses[e], e))
    return min(range(len(pooled)), key=lambda e: (losses[e], e))


def concat(a: TrainData, b: TrainData) -> TrainData:
    return TrainData(np.concatenate([np.asarray(a.x), np.asarray(b.x)]),
                     np.concatenate([np.asarray(a.y), np.asarray(b.y)]))


def subset(data: TrainData, index: np.ndarray) -> TrainData:
    return TrainData(np.asarray(data.x)[index], np.asarray(data.y)[index])


def model_meta(heldout: HeldOut | None, calibrate: bool) -> dict[str, Any]:
    """What a model file carries for selection: its held-out predictions and temperature.
    (A regression model's interval is computed from those predictions where it is used,
    at the level `selection.interval` asks for: `trainlab.calibration.conformal_halfwidth`.)"""
    from trainlab.calibration import fit_temperature

    if heldout is None:
        return {}
    fitted = calibrate and not heldout.regression
    temperature = fit_temperature(np.log(np.clip(heldout.outputs, 1e-12, None)), heldout.y) if fitted else 1.0
    return {"heldout": heldout.to_json(), "temperature": temperature}


def selection_metrics(heldout: HeldOut, temperature: float) -> dict[str, float]:
    """How the model was selected and what its held-out predictions score."""
    metrics = {"selection/cv_folds": heldout.folds, "selection/heldout_samples": len(heldout.y),
               "heldout/loss": heldout.loss, f"heldout/{heldout.score_name}": heldout.score}
    if not heldout.regression:
        metrics.update({"heldout/loss_calibrated": heldout.calibrated(temperature).loss,
                        "calibration/temperature": temperature})
    return metrics
