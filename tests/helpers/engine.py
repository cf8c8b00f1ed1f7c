"""Tiny models, data and configs for engine tests (reference-style: compare against plain torch)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from trainlab.config.schema import ModelConfig, TrainerConfig, TrainSpec
from trainlab.engine import Hook, LoopState, TrainData
from trainlab.models import Classifier, build_model

LENGTH, CLASSES = 32, 3   # signal_data's samples: length and number of classes


def signal_data(n: int, seed: int, noise: float = 0.5, flip: bool = False) -> TrainData:
    """n noisy sine waves whose frequency is the class: a separable 1-D signal task.

    flip=True shifts every label by one, so a model that learns the task gets worse on it.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    t = np.linspace(0.0, 1.0, LENGTH)
    x = np.sin(2 * np.pi * (y[:, None] + 1) * t[None, :]) + noise * rng.standard_normal((n, LENGTH))
    if flip:
        y = (y + 1) % CLASSES
    return TrainData(x.astype(np.float32), y.astype(np.int64))


def trainer_cfg(**overrides: Any) -> TrainerConfig:
    """A one-thread, silent trainer without clipping (tests switch features on one at a time)."""
    base = {"batch_size": 32, "threads": 1, "progress": "off", "clip_grad_norm": None}
    return TrainerConfig.model_validate({**base, **overrides})


def train_spec(epochs: int = 3, optimizer: dict | None = None, schedule: dict | None = None,
               early_stopping: dict | None = None, loss: dict | None = None, **extra: Any) -> TrainSpec:
    """AdamW at a constant lr, no weight decay, early stopping off, unless overridden."""
    return TrainSpec.model_validate({
        "epochs": epochs,
        "batch_size": None,   # the trainer's batch (the schema's default is `auto`)
        "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.0, **(optimizer or {})},
        "schedule": {"name": "constant", "warmup_epochs": 0, **(schedule or {})},
        "early_stopping": {"enabled": False, **(early_stopping or {})},
        "loss": loss or {},
        **extra,
    })


def tiny_model(arch: str = "mlp", seed: int = 0, num_classes: int = CLASSES, **cfg: Any) -> Classifier:
    """A width-8, depth-1 model (no batch norm, no dropout unless asked), seeded init."""
    torch.manual_seed(seed)
    model_cfg = ModelConfig.model_validate({"arch": arch, "width": 8, "depth": 1, "kernel_size": 3,
                                            "dropout": 0.0, "batchnorm": False, **cfg})
    return build_model(model_cfg, (LENGTH,), num_classes)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Bit-identical state dicts."""
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs (max {(a[key].double() - b[key].double()).abs().max()})"


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


class Recorder(Hook):
    """Captures what the loop exposes: weights at every epoch end, metric rows, the fit's setup."""

    def __init__(self) -> None:
        self.epoch_weights: dict[int, dict[str, torch.Tensor]] = {}
        self.epochs: list[dict[str, float]] = []
        self.rows: list[tuple[str, float, int]] = []
        self.start: dict[str, Any] = {}

    def on_fit_start(self, state: LoopState) -> None:
        self.start = {"optimizer": state.optimizer, "group": dict(state.optimizer.param_groups[0]),
                      "scaler_enabled": state.scaler.is_enabled(), "precision": state.runtime.precision,
                      "steps_per_epoch": state.steps_per_epoch}

    def on_metrics(self, state: LoopState, rows: list[tuple[str, float, int]]) -> None:
        self.rows.extend(rows)

    def on_epoch_end(self, state: LoopState, metrics: dict[str, float]) -> None:
        self.epoch_weights[state.epoch] = weights(state.model)
        self.epochs.append(dict(metrics))

    def series(self, name: str) -> dict[int, float]:
        return {step: value for key, value, step in self.rows if key == name}


class StopAt(Hook):
    """Simulates Ctrl-C at the end of an epoch or of a step (None: never)."""

    def __init__(self, epoch: int | None = None, step: int | None = None) -> None:
        self.epoch, self.step = epoch, step

    def on_step_end(self, state: LoopState) -> None:
        if state.step == self.step:
            raise KeyboardInterrupt

    def on_epoch_end(self, state: LoopState, metrics: dict[str, float]) -> None:
        if state.epoch == self.epoch:
            raise KeyboardInterrupt


class BlowUpAt(Hook):
    """Raises the base lr to an absurd value from epoch `epoch` on."""

    def __init__(self, epoch: int, lr: float) -> None:
        self.epoch, self.lr = epoch, lr

    def on_epoch_start(self, state: LoopState) -> None:
        if state.epoch == self.epoch:
            for group in state.optimizer.param_groups:
                group["initial_lr"] = self.lr
