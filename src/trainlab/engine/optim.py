"""Optimizers from torch.optim and the learning-rate schedule, built from params."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trainlab.config.schema import OptimizerConfig, ScheduleConfig
from trainlab.errors import ParamsError


@dataclass
class ParamGroup:
    """Parameters that share a learning-rate multiplier (e.g. backbone at 0.1x the head)."""

    name: str
    params: list[torch.nn.Parameter]
    lr_scale: float = 1.0


def effective_lr(cfg: OptimizerConfig, batch_size: int) -> float:
    """The linear scaling rule: lr grows with the global batch against a reference batch."""
    if cfg.lr == "auto":   # the stage measures it first (trainlab.training.lr_choice)
        raise ParamsError("optimizer.lr: auto reached the optimizer unmeasured; run lr_range_test first")
    if cfg.reference_batch_size is None:
        return cfg.lr
    return cfg.lr * batch_size / cfg.reference_batch_size


def build_optimizer(groups: list[ParamGroup], cfg: OptimizerConfig, batch_size: int,
                    fused: bool = False) -> torch.optim.Optimizer:
    """A torch.optim optimizer with one param group per ParamGroup; `initial_lr` is the base lr.

    `fused`: torch's fused kernel (one call updates every parameter) where the optimizer has
    one (sgd, adam, adamw, adagrad); the engine asks for it on tiny steps (runtime.tiny_steps).
    """
    lr = effective_lr(cfg, batch_size)
    kernel = {"fused": True} if fused else {}
    torch_groups = [{"params": g.params, "lr": lr * g.lr_scale, "initial_lr": lr * g.lr_scale, "name": g.name}
                    for g in groups if g.params]
    wd = cfg.weight_decay
    if cfg.name == "sgd":
        return torch.optim.SGD(torch_groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=wd, **kernel)
    if cfg.name == "adam":
        return torch.optim.Adam(torch_groups, lr=lr, betas=cfg.betas, eps=cfg.eps, weight_decay=wd, **kernel)
    if cfg.name == "adamw":
        return torch.optim.AdamW(torch_groups, lr=lr, betas=cfg.betas, eps=cfg.eps, weight_decay=wd, **kernel)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(torch_groups, lr=lr, alpha=cfg.alpha, eps=cfg.eps, weight_decay=wd,
                                   momentum=cfg.momentum)
    if cfg.name == "adagrad":
        return torch.optim.Adagrad(torch_groups, lr=lr, eps=cfg.eps, weight_decay=wd, **kernel)
    # L-BFGS keeps one param group and re-evaluates the loss through a closure. The strong-Wolfe
    # line search picks each step's length: without it a fixed lr steps on from a near-zero loss
    # into a blow-up that the last bits of the kernels decide (bench/RESULTS.md section 11).
    params = [p for g in groups for p in g.params]
    return torch.optim.LBFGS([{"params": params, "initial_lr": lr}], lr=lr, history_size=cfg.history_size,
                             max_iter=cfg.max_iter, line_search_fn="strong_wolfe")


@dataclass(frozen=True)
class SwaTail:
    """SWA's learning rate (trainer.averaging: swa), as torch's SWALR with cosine annealing:
    from `start_step` the factor falls from the schedule's factor there to `factor` over
    `anneal_steps`, then stays at `factor`."""

    start_step: int
    anneal_steps: int
    factor: float


@dataclass
class Schedule:
    """Per-step learning-rate multiplier: warmup, then the decay shape; plateau acts per epoch;
    with SWA, the tail of `SwaTail` from its start step.

    Written by hand rather than with torch's LambdaLR so that its whole state is a few
    numbers in the checkpoint and the lr at any step is a pure function of that state.
    """

    cfg: ScheduleConfig
    steps_per_epoch: int
    epochs: int
    plateau_scale: float = 1.0
    plateau_best: float = math.inf
    plateau_bad_epochs: int = 0
    swa: SwaTail | None = None

    @property
    def warmup_steps(self) -> int:
        return int(round(self.cfg.warmup_epochs * self.steps_per_epoch))

    @property
    def total_steps(self) -> int:
        return max(1, self.steps_per_epoch * self.epochs)

    def factor(self, step: int) -> float:
        """Multiplier of the base lr for optimizer step `step` (0-based)."""
        tail = self.swa
        if tail is None or step < tail.start_step:
            return self._shape(step)
        done = step - tail.start_step
        if done >= tail.anneal_steps:
            return tail.factor
        start = self._shape(tail.start_step)
        return tail.factor + (start - tail.factor) * 0.5 * (1 + math.cos(math.pi * done / tail.anneal_steps))

    def _shape(self, step: int) -> float:
        """The schedule's own factor: warmup, then the decay shape."""
        warm = self.warmup_steps
        if step < warm:
            return (step + 1) / warm
        t, span = step - warm, max(1, self.total_steps - warm)
        floor, name = self.cfg.min_lr_ratio, self.cfg.name
        if name == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, span) / span))
        if name == "linear":
            return floor + (1 - floor) * max(0.0, 1 - t / span)
        if name == "step":
            return self.cfg.gamma ** (step // (self.steps_per_epoch * self.cfg.step_epochs))
        if name == "inverse_sqrt":
            tau = max(warm, self.steps_per_epoch)
            return math.sqrt(tau / (tau + t))
        if name == "plateau":
            return self.plateau_scale
        return 1.0   # constant

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every group's lr for this step; returns the largest (the head's when the
        backbone runs at a fraction of it), which is what `lr` curves show."""
        scale = self.factor(step)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * scale
        return max(group["lr"] for group in optimizer.param_groups)

    def end_epoch(self, monitored: float, lower_is_better: bool, step: int = 0) -> None:
        """Reduce-on-plateau bookkeeping after `step` optimizer steps; other schedules ignore it."""
        if self.cfg.name != "plateau" or not math.isfinite(monitored):
            return
        if self.swa is not None and step >= self.swa.start_step:
            return   # the SWA tail anneals from the scale it started at, whatever val does after
        value = monitored if lower_is_better else -monitored
        if value < self.plateau_best - 1e-12:
            self.plateau_best, self.plateau_bad_epochs = value, 0
            return
        self.plateau_bad_epochs += 1
        if self.plateau_bad_epochs > self.cfg.plateau_patience:
            self.plateau_scale *= self.cfg.gamma
            self.plateau_bad_epochs = 0

    def state_dict(self) -> dict:
        return {"plateau_scale": self.plateau_scale, "plateau_best": self.plateau_best,
                "plateau_bad_epochs": self.plateau_bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.plateau_scale = state["plateau_scale"]
        self.plateau_best = state["plateau_best"]
        self.plateau_bad_epochs = state["plateau_bad_epochs"]
