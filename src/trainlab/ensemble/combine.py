"""Combining models: soft vote, hard vote, or weights fitted on the validation split.

An `Ensemble` is an nn.Module that returns log-probabilities, so evaluate (and a
user's own script) calls it exactly like a single model: `ensemble(x).argmax(-1)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainlab.calibration import heldout_loss
from trainlab.errors import CheckpointError
from trainlab.io import torch_save
from trainlab.models import model_from_blob, read_checkpoint

FORMAT = "trainlab.ensemble/1"
# Tie-break weight for hard voting: far below one vote, so it only orders tied classes.
TIE_BREAK = 1e-3


class Ensemble(nn.Module):
    """Members' class probabilities combined by `method`; forward returns log-probabilities.
    For a regression target, the weighted mean of the members' predictions."""

    def __init__(self, members: list[nn.Module], weights: torch.Tensor, method: str,
                 temperatures: torch.Tensor | None = None, regression: bool = False):
        super().__init__()
        if method not in {"greedy", "soft_vote", "hard_vote", "weighted"}:
            raise ValueError(f"unknown ensemble method {method!r}")
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", weights.float() / weights.sum())
        # Each member's own calibration: its logits are divided by its temperature.
        self.register_buffer("temperatures", torch.ones(len(members)) if temperatures is None
                             else temperatures.float())
        self.method = method
        self.regression = regression

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.regression:
            return torch.einsum("m,mnk->nk", self.weights, torch.stack([m(x).float() for m in self.members]))
        probs = torch.stack([(m(x).float() / t).softmax(-1)
                             for m, t in zip(self.members, self.temperatures)])   # (members, n, classes)
        return combine(probs, self.weights, self.method).clamp_min(1e-12).log()


def combine(probs: torch.Tensor, weights: torch.Tensor, method: str, regression: bool = False) -> torch.Tensor:
    """Class probabilities of the ensemble from members' probabilities (members, n, classes);
    for a regression target the weighted mean of the members' predictions (every method)."""
    weights = weights.to(probs.dtype)   # held-out probabilities come in float64, a model's in float32
    mean = torch.einsum("m,mnc->nc", weights, probs)
    if method != "hard_vote" or regression:
        return mean
    votes = torch.nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).to(probs.dtype)   # (m, n, c)
    counts = torch.einsum("m,mnc->nc", weights, votes)
    # Ties between classes with equal votes go to the higher mean probability, then to the
    # lower class index (argmax takes the first maximum): deterministic either way.
    scores = counts + TIE_BREAK * mean
    return scores / scores.sum(-1, keepdim=True)


def fit_weights(member_probs: torch.Tensor, y: torch.Tensor, steps: int = 300) -> torch.Tensor:
    """Weights (on the simplex) minimising the validation NLL of the weighted mean probability,
    or the squared error of the weighted mean prediction for a regression target."""
    logits = torch.zeros(member_probs.shape[0], requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        mix = torch.einsum("m,mnc->nc", logits.softmax(0), member_probs)
        if y.is_floating_point():
            loss = torch.nn.functional.mse_loss(mix[:, 0], y.to(mix.dtype))
        else:
            loss = torch.nn.functional.nll_loss(mix.clamp_min(1e-12).log(), y)
        loss.backward()
        optimizer.step()
    return logits.detach().softmax(0)


def greedy_selection(member_probs: np.ndarray, y: np.ndarray, rounds: int) -> np.ndarray:
    """Ensemble selection with replacement (Caruana et al., 2004): member counts as weights.

    Starts from the best member by held-out loss, then adds, one at a time and with
    replacement, whichever member lowers the held-out loss of the running mean most;
    the best ensemble seen along the way is kept. So on these held-out predictions the
    ensemble's loss is never above its best member's. The loss is the NLL of probabilities,
    or the squared error of a regression's predictions.
    """
    losses = [heldout_loss(p, y) for p in member_probs]
    counts = np.zeros(len(member_probs))
    counts[int(np.argmin(losses))] = 1
    best_counts, best_loss = counts.copy(), min(losses)
    total = member_probs[int(np.argmin(losses))].copy()
    for _ in range(rounds - 1):
        n = counts.sum()
        candidates = [heldout_loss((total + p) / (n + 1), y) for p in member_probs]
        pick = int(np.argmin(candidates))
        counts[pick] += 1
        total += member_probs[pick]
        if candidates[pick] < best_loss - 1e-12:
            best_counts, best_loss = counts.copy(), candidates[pick]
    return best_counts / best_counts.sum()


@torch.inference_mode()
def member_outputs(members: list[nn.Module], x: torch.Tensor, regression: bool = False,
                   batch: int = 2048) -> torch.Tensor:
    """(members, n, classes) softmax outputs of every member on `x` (a regression's predictions as they are)."""
    outs = []
    for member in members:
        member.eval()
        raw = torch.cat([member(chunk).float() for chunk in x.split(batch)])
        outs.append(raw if regression else raw.softmax(-1))
    return torch.stack(outs)


def save_ensemble(path: str | Path, ensemble: Ensemble, member_blobs: list[dict[str, Any]],
                  names: list[str], meta: dict[str, Any] | None = None) -> None:
    """One self-contained file: every member's weights and config, the weights and method."""
    torch_save({"format": FORMAT, "method": ensemble.method, "weights": ensemble.weights.cpu(),
                "temperatures": ensemble.temperatures.cpu(), "regression": ensemble.regression,
                "names": names, "members": member_blobs,
                "meta": meta or {}}, path)


def load_ensemble(path: str | Path) -> tuple[Ensemble, dict[str, Any]]:
    blob = read_checkpoint(path)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a trainlab ensemble file (expected format {FORMAT})")
    members = [model_from_blob(m, f"{path} member {i}").eval() for i, m in enumerate(blob["members"])]
    ensemble = Ensemble(members, blob["weights"], blob["method"], blob.get("temperatures"),
                        bool(blob.get("regression", False))).eval()
    return ensemble, {k: v for k, v in blob.items() if k != "members"}


def load_any(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load a single model or an ensemble file, whichever `path` holds."""
    from trainlab.models import load_model

    blob_format = read_checkpoint(path).get("format")
    if blob_format == FORMAT:
        return load_ensemble(path)
    return load_model(path)
