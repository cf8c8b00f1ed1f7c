"""Weight averaging, `trainer.averaging`: the weights a fit hands back are an average.

    ema   an exponential moving average of the weights and buffers, updated after every
          optimizer step. Each epoch validates the average; early stopping, the best weights
          and the fit's output are the average's.
    swa   stochastic weight averaging (Izmailov et al. 2018): from `swa_start` of the epochs
          on, the schedule anneals to a constant `swa_lr` (optim.SwaTail) and the weights at
          each epoch end enter an equal-weight average. The last epoch validates the average
          after its batch-norm statistics are recomputed on the training split, and the fit
          hands it back. Early stopping stops no run once averaging has started.

Both build on torch.optim.swa_utils.AveragedModel (SWA's batch-norm refit is its update_bn,
sparing frozen blocks). The average lives in the `Averaging` hook, so resume checkpoints
keep it with every other hook's state.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from trainlab.config.schema import TrainerConfig
from trainlab.engine.batches import TrainData, rows
from trainlab.engine.hooks import Hook, LoopState
from trainlab.engine.optim import SwaTail


def swa_start_epoch(trainer: TrainerConfig, epochs: int) -> int:
    """The first epoch (0-based) whose end enters the SWA average: at least the last one."""
    # The epsilon keeps 0.29 x 100 at 29: in binary it is 28.999999999999996.
    return min(epochs - 1, math.floor(trainer.swa_start * epochs + 1e-9))


def swa_tail(trainer: TrainerConfig, steps_per_epoch: int, epochs: int) -> SwaTail | None:
    """The schedule's SWA tail for this fit (None unless `trainer.averaging` is swa)."""
    if trainer.averaging != "swa":
        return None
    start = swa_start_epoch(trainer, epochs) * steps_per_epoch
    return SwaTail(start, trainer.swa_anneal_epochs * steps_per_epoch, trainer.swa_lr)


def build_averaging(trainer: TrainerConfig, model: torch.nn.Module, epochs: int) -> "Averaging | None":
    """The averaging hook for `trainer.averaging` (None for none), over the trained module."""
    return None if trainer.averaging == "none" else Averaging(trainer, model, epochs)


class Averaging(Hook):
    """The averaged copy of the model: EMA updates after each step, SWA at epoch ends (`end_epoch`)."""

    def __init__(self, trainer: TrainerConfig, model: torch.nn.Module, epochs: int):
        self.mode, self.decay = trainer.averaging, trainer.ema_decay
        self.start_epoch = swa_start_epoch(trainer, epochs)
        ema = self.mode == "ema"
        # EMA averages the buffers too (batch-norm statistics of the averaged weights); SWA copies
        # them and recomputes the batch-norm ones at the end (`fit_batchnorm`).
        self.averaged = AveragedModel(model, multi_avg_fn=self._ema_step if ema else None, use_buffers=ema)
        self.averaged.requires_grad_(False)
        # n_averaged mirrored on the host: the EMA decay then costs no device sync per step.
        self.updates = 0
        self.bn_fitted = False

    @property
    def module(self) -> torch.nn.Module:
        """The averaged weights, in a module like the trained one (same state-dict keys)."""
        return self.averaged.module

    # ------------------------------------------------------------------ during the fit
    def on_step_end(self, state: LoopState) -> None:
        if self.mode == "ema":
            self._update(state.model)

    def end_epoch(self, state: LoopState, train: TrainData) -> torch.nn.Module | None:
        """At an epoch's end, before validation: the module whose weights this epoch
        validates, None for the trained one (SWA before its last epoch)."""
        if self.mode == "ema":
            _broadcast_buffers(self.module, state)
            return self.module
        if state.epoch < self.start_epoch:
            return None
        self._update(state.model)
        if state.epoch + 1 < state.spec.epochs:
            return None
        self.fit_batchnorm(state, train)
        return self.module

    def in_swa(self, state: LoopState) -> bool:
        """Whether the epoch running belongs to SWA's average (early stopping stops no run then)."""
        return self.mode == "swa" and state.epoch >= self.start_epoch

    def _update(self, model: torch.nn.Module) -> None:
        self.averaged.update_parameters(model)
        self.updates += 1

    @torch.no_grad()
    def _ema_step(self, averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        # AveragedModel calls this once per (device, dtype) group, from its second update on (the
        # first copies the weights: the random initialisation never enters the average).
        if not averaged[0].is_floating_point():
            # batch norm's num_batches_tracked is a count: torch's EMA would truncate its average
            for mine, theirs in zip(averaged, current):
                mine.copy_(theirs)
            return
        updates = self.updates
        decay = min(self.decay, (1 + updates) / (10 + updates))
        get_ema_multi_avg_fn(decay)(averaged, current, n)   # one fused lerp over the group

    def fit_batchnorm(self, state: LoopState, train: TrainData) -> None:
        """Batch-norm statistics for the SWA weights: one pass over the whole training split,
        in order and without augmentation, the same on every rank."""
        module, device = self.module, state.runtime.device
        index = list(torch.arange(len(train)).split(state.spec.batch_size))
        if len(index) > 1 and len(index[-1]) < 2:   # one sample per channel cannot be normalised
            index.pop()
        if hasattr(state.model, "frozen_blocks"):   # gradual unfreezing changed them since the copy
            module.frozen_blocks = set(state.model.frozen_blocks)
        # Dropout draws here from a generator seeded for this pass: the statistics are a function
        # of the weights and the data alone, and the loop's random stream is left as it was.
        cuda = device.type == "cuda"
        with torch.random.fork_rng(devices=[device] if cuda else []), torch.no_grad():
            torch.default_generator.manual_seed(state.seed)
            if cuda:
                torch.cuda.manual_seed(state.seed)   # this rank's device only
            _refit_batchnorm(module, (rows(train, i, device)[0] for i in index))
        self.bn_fitted = True

    # ------------------------------------------------------------------ at the end
    def finish(self, state: LoopState, train: TrainData, early_stopping: bool) -> bool:
        """Give `state.model` the averaged weights where they are the fit's output; True if it did.

        EMA: unless early stopping is enabled (the best epoch's weights, which are the average's,
        are restored instead). SWA: once any epoch was averaged, whatever ended the run."""
        if self.mode == "ema" and early_stopping:
            return False
        if self.mode == "swa":
            if not self.updates:
                return False
            if not self.bn_fitted:   # a hook ended the run before the last epoch
                self.fit_batchnorm(state, train)
        state.model.load_state_dict(self.module.state_dict())
        return True

    def summary(self, state: LoopState, applied: bool) -> tuple[str, bool]:
        """(what to add to the fit's stop reason, whether the last epoch validated the weights
        handed back). SWA: how many epochs were averaged, or why none were."""
        if self.mode != "swa":
            return "", False
        first = self.start_epoch + 1
        if not applied:
            return f"; SWA would have started at epoch {first}: no weights averaged", False
        last = first + self.updates - 1
        note = f"; SWA averaged the weights of {f'epoch {first}' if last == first else f'epochs {first}-{last}'}"
        if state.epoch < state.spec.epochs:   # a hook stopped the run: no epoch validated the average
            return note + ", not validated", False
        return note, True

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {"averaged": self.averaged.state_dict(), "bn_fitted": self.bn_fitted}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state["averaged"])
        self.updates, self.bn_fitted = int(self.averaged.n_averaged), state["bn_fitted"]


def _refit_batchnorm(module: torch.nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """torch.optim.swa_utils.update_bn, for the norms in training mode only: each one's statistics
    become the plain mean over the batches (momentum None). update_bn resets every batch norm,
    and a frozen block's (finetune.freeze; train() keeps it in eval mode) would then normalise
    the pass, and the model after it, with the reset statistics instead of its trained ones."""
    was_training = module.training
    module.train()
    norms = {m: m.momentum for m in module.modules() if getattr(m, "running_mean", None) is not None and m.training}
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    for x in batches:
        module(x)
    for norm, momentum in norms.items():
        norm.momentum = momentum
    module.train(was_training)


def _broadcast_buffers(module: torch.nn.Module, state: LoopState) -> None:
    # Under ddp on CPU each rank's batch-norm statistics follow its own shard of the batch, and
    # so would its EMA of them: as DDP does for the model, rank 0's hold (and are checkpointed).
    if state.runtime.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
