"""Loss functions: cross-entropy (label smoothing), binary cross-entropy, mean squared error, Huber."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from trainlab.config.schema import LossConfig
from trainlab.errors import ParamsError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def build_loss(cfg: LossConfig, regression: bool = False) -> LossFn:
    """A mean-reduced loss of (logits, targets).

    Integer targets are class indices. For bce and mse they become one-hot vectors
    (one-vs-rest and a Brier-style score); float targets are used as they are
    (multi-label for bce, regression for mse and huber). `auto` is cross-entropy for
    classes and mean squared error for a regression target.
    """
    name = resolved_loss(cfg, regression)
    if name == "cross_entropy":
        smoothing = cfg.label_smoothing
        return lambda logits, y: F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
    if name == "bce":
        return lambda logits, y: F.binary_cross_entropy_with_logits(logits.float(), _dense(y, logits))
    if name == "huber":
        delta = cfg.huber_delta
        return lambda logits, y: F.huber_loss(_prediction(logits, y), _dense(y, logits), delta=delta)
    return lambda logits, y: F.mse_loss(_prediction(logits, y), _dense(y, logits))


def resolved_loss(cfg: LossConfig, regression: bool) -> str:
    """The loss `cfg.name` stands for on these targets; a classification loss on a number is refused."""
    if cfg.name == "auto":
        return "mse" if regression else "cross_entropy"
    if regression and cfg.name in ("cross_entropy", "bce"):
        raise ParamsError(f"loss.name: {cfg.name} needs class labels, but the target is a number to predict "
                          f"(regression); accepted there: auto, mse, huber")
    return cfg.name


def _dense(y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    if y.is_floating_point():
        return y.float().reshape(logits.shape)
    return F.one_hot(y, logits.shape[-1]).float()


def _prediction(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Class targets are compared with probabilities; regression targets with raw outputs.
    return logits.float() if y.is_floating_point() else logits.float().softmax(-1)


def has_classes(y: Any) -> bool:
    """Whether targets (a tensor or a NumPy array) are class indices rather than regression values."""
    dtype = y.dtype
    return not (dtype.is_floating_point if isinstance(dtype, torch.dtype) else np.issubdtype(dtype, np.floating))


def correct_count(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Number of correct argmax predictions, kept on the device (no sync)."""
    if y.is_floating_point():
        return torch.zeros((), device=logits.device)
    return (logits.argmax(-1) == y).sum()
