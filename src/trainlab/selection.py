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

from trainlab.calibration import probs_nll
from trainlab.config import Params
from trainlab.engine import Hook, LoopState, TrainData

EVAL_BATCH = 2048


@dataclass
class HeldOut:
    """Probabilities on held-out labelled samples: (n, classes), with their labels."""

    kind: str                 # "val" (the validation split) or "cv" (out-of-fold)
    probs: np.ndarray
    y: np.ndarray
    folds: int = 0

    @property
    def loss(self) -> float:
        return probs_nll(self.probs, self.y)

    @property
    def acc(self) -> float:
        return float((self.probs.argmax(1) == self.y).mean())

    def describe(self) -> str:
        if self.kind == "cv":
            return f"{self.folds}-fold CV over {len(self.y)} labelled samples"
        return f"validation split of {len(self.y)} samples"

    def to_json(self) -> dict[str, Any]:
        # Rounded: 6 digits are far below any selection difference and keep the file small.
        return {"kind": self.kind, "folds": self.folds, "y": self.y.astype(int).tolist(),
                "probs": np.round(self.probs.astype(np.float64), 6).tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "HeldOut":
        return cls(data["kind"], np.asarray(data["probs"], dtype=np.float64),
                   np.asarray(data["y"], dtype=np.int64), int(data.get("folds", 0)))


def uses_cv(params: Params, val_size: int) -> bool:
    return val_size < params.selection.cv_below


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Held-out indices of each fold; fewer folds when the rarest class has fewer members."""
    from sklearn.model_selection import StratifiedKFold

    rarest = int(np.bincount(y).min(initial=len(y)) if len(y) else 0)
    k = max(2, min(folds, rarest)) if rarest >= 2 else 2
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    if rarest < 2:   # a class with one sample cannot be stratified: plain shuffled folds
        from sklearn.model_selection import KFold

        splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
    return [held for _, held in splitter.split(np.zeros(len(y)), y)]


@torch.inference_mode()
def predict_probs(model: torch.nn.Module, x: Any, device: torch.device | None = None) -> np.ndarray:
    """Softmax outputs of `model` on `x` (eval mode restored afterwards)."""
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    outs = [model(chunk.to(device)).float().softmax(-1).cpu() for chunk in x.split(EVAL_BATCH)]
    model.train(was_training)
    return torch.cat(outs).numpy().astype(np.float64)


class EpochPredictions(Hook):
    """Records the model's probabilities on one fold's held-out samples after every epoch."""

    def __init__(self, x: Any):
        self.x = x
        self.per_epoch: list[np.ndarray] = []

    def on_epoch_end(self, state: LoopState, metrics: dict[str, float]) -> None:
        self.per_epoch.append(predict_probs(state.model, self.x, state.runtime.device).astype(np.float32))

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
    """Out-of-fold probabilities of all n samples, one array per epoch."""
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
    if monitor == "val/acc":
        accs = [float((p.argmax(1) == y).mean()) for p in pooled]
        return min(range(len(pooled)), key=lambda e: (-accs[e], losses[e], e))
    return min(range(len(pooled)), key=lambda e: (losses[e], e))


def concat(a: TrainData, b: TrainData) -> TrainData:
    return TrainData(np.concatenate([np.asarray(a.x), np.asarray(b.x)]),
                     np.concatenate([np.asarray(a.y), np.asarray(b.y)]))


def subset(data: TrainData, index: np.ndarray) -> TrainData:
    return TrainData(np.asarray(data.x)[index], np.asarray(data.y)[index])


def model_meta(heldout: HeldOut | None, calibrate: bool) -> dict[str, Any]:
    """What a model file carries for selection: its held-out predictions and temperature."""
    from trainlab.calibration import fit_temperature

    if heldout is None:
        return {}
    temperature = fit_temperature(np.log(np.clip(heldout.probs, 1e-12, None)), heldout.y) if calibrate else 1.0
    return {"heldout": heldout.to_json(), "temperature": temperature}


def selection_metrics(heldout: HeldOut, temperature: float) -> dict[str, float]:
    """How the model was selected and what its held-out predictions score."""
    from trainlab.calibration import apply_temperature

    calibrated = HeldOut(heldout.kind, apply_temperature(heldout.probs, temperature), heldout.y)
    return {"selection/cv_folds": heldout.folds, "selection/heldout_samples": len(heldout.y),
            "heldout/loss": heldout.loss, "heldout/acc": heldout.acc,
            "heldout/loss_calibrated": calibrated.loss, "calibration/temperature": temperature}
