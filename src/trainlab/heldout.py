"""Held-out predictions: what every choice after training is made on.

Every target-task training leaves `HeldOut` predictions: class probabilities (or a
regression's predictions) on labelled samples the model was not trained on. They drive
everything that chooses: the epoch to keep, the search's ranking, the ensemble's members
and the temperature. With a validation split of `selection.cv_below` samples or more they
are the final model's predictions on it; below that, the pooled out-of-fold predictions
of cross-validation (`trainlab.training.cross_validation`).

This module imports the models' inputs and outputs only, not the training loop: ensemble
and evaluate read held-out predictions without depending on how models are trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainlab.calibration import apply_temperature, heldout_loss

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
