"""The loop's state and its hooks: the fixed points where checkpoints, tracking, progress,
pruning and diagnosis plug into `fit()`, plus the best-so-far tracker the loop owns.

A hook is an object with these six methods (all optional, see `Hook`). `fit()` calls
them through one `Hooks` list, in list order with checkpointing last, so hooks that
change the state run before the one that saves it; every event reaches every rank.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from trainlab.config.schema import EarlyStoppingConfig, TrainerConfig, TrainSpec
from trainlab.engine.optim import Schedule
from trainlab.engine.runtime import Runtime

MetricRows = list[tuple[str, float, int]]   # (name, value, step)


@dataclass
class LoopState:
    """Everything `fit()` mutates; hooks read it and may set `should_stop`."""

    model: torch.nn.Module          # never the DDP wrapper; under fsdp the sharded module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scaler: torch.amp.GradScaler
    runtime: Runtime
    spec: TrainSpec
    trainer: TrainerConfig
    seed: int
    steps_per_epoch: int
    best: "BestSoFar | None" = None  # the best epoch so far and its weights (owned by fit())
    hooks: "Hooks | None" = None
    epoch: int = 0                  # the epoch running (0-based)
    step: int = 0                   # optimizer steps completed, over all epochs
    step_in_epoch: int = 0          # optimizer steps completed in this epoch
    history: list[dict[str, float]] = field(default_factory=list)  # one row per finished epoch
    epoch_sums: dict[str, float] = field(default_factory=dict)     # partial epoch, for mid-epoch resume
    should_stop: bool = False
    stop_reason: str = ""
    # The module whose weights this epoch validated, when not `model`: the average of
    # trainer.averaging (ema every epoch, swa in its last). Hooks that score or keep an
    # epoch's weights (cross-validation's) read `evaluated`.
    validated: torch.nn.Module | None = None

    @property
    def evaluated(self) -> torch.nn.Module:
        """The module whose weights the epoch just ended validated (see `validated`)."""
        return self.model if self.validated is None else self.validated


class Hook:
    """Base class: override what you need. Hooks never own the loop, they observe it.

    A hook with state (`state_dict`) has it saved in resume checkpoints under its `name`.
    """

    @property
    def name(self) -> str:
        return type(self).__name__

    def on_fit_start(self, state: LoopState) -> None: ...
    def on_epoch_start(self, state: LoopState) -> None: ...
    def on_step_end(self, state: LoopState) -> None: ...
    def on_metrics(self, state: LoopState, rows: MetricRows) -> None:
        """Per-step metrics, delivered in batches (they leave the device every log_every_steps)."""
    def on_epoch_end(self, state: LoopState, metrics: dict[str, float]) -> None: ...
    def on_fit_end(self, state: LoopState) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Hooks(Hook):
    """A fit's hooks in call order, checkpointing last: each event is one typed method that
    calls it on every hook. Hook states are saved and restored by name, so a rank with one
    more hook than the others (rank 0's tracking) restores the same states."""

    def __init__(self, hooks: Sequence[Hook], checkpointing: Hook | None = None):
        # Checkpointing saves every other hook's state, so it runs after all of them.
        self.hooks = [*hooks, *([checkpointing] if checkpointing is not None else [])]

    def on_fit_start(self, state: LoopState) -> None:
        for hook in self.hooks:
            hook.on_fit_start(state)

    def on_epoch_start(self, state: LoopState) -> None:
        for hook in self.hooks:
            hook.on_epoch_start(state)

    def on_step_end(self, state: LoopState) -> None:
        for hook in self.hooks:
            hook.on_step_end(state)

    def on_metrics(self, state: LoopState, rows: MetricRows) -> None:
        for hook in self.hooks:
            hook.on_metrics(state, rows)

    def on_epoch_end(self, state: LoopState, metrics: dict[str, float]) -> None:
        for hook in self.hooks:
            hook.on_epoch_end(state, metrics)

    def on_fit_end(self, state: LoopState) -> None:
        for hook in self.hooks:
            hook.on_fit_end(state)

    def keyed(self) -> dict[str, Hook]:
        """Each hook under its name; a repeated name gets '#2', '#3' in list order."""
        keyed: dict[str, Hook] = {}
        for hook in self.hooks:
            key, n = hook.name, 1
            while key in keyed:
                n += 1
                key = f"{hook.name}#{n}"
            keyed[key] = hook
        return keyed

    def state_dict(self) -> dict[str, Any]:
        return {key: hook.state_dict() for key, hook in self.keyed().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # A hook the checkpoint does not name (added since, or another rank's) starts fresh.
        for key, hook in self.keyed().items():
            if key in state:
                hook.load_state_dict(state[key])


class BestSoFar:
    """The best epoch by the early-stopping monitor and its weights; stops after `patience`
    epochs without improvement when early stopping is enabled.

    `fit()` owns it: with early stopping enabled the run ends on the best epoch's weights
    even if it never stopped early, and a diverged run falls back to them in any case.
    The weights kept are those validated: the model's, or the average's (trainer.averaging).
    """

    def __init__(self, cfg: EarlyStoppingConfig):
        self.cfg = cfg
        self.lower_is_better = cfg.monitor.endswith("loss")
        self.best = math.inf
        self.best_epoch = -1
        self.bad_epochs = 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def update(self, state: LoopState, metrics: dict[str, float], weights: torch.nn.Module | None = None,
               may_stop: bool = True) -> None:
        """Called at each epoch end, before the hooks see it (they may read should_stop).

        `weights`: the module `metrics` validated, if not `state.model` (an average of its
        weights, with the same keys). `may_stop` False: no early stop this epoch (SWA averages)."""
        value = metrics.get(self.cfg.monitor, math.nan)
        score = value if self.lower_is_better else -value
        if math.isfinite(score) and score < self.best - self.cfg.min_delta:
            self.best, self.best_epoch, self.bad_epochs = score, state.epoch, 0
            kept = state.model if weights is None else weights
            self.best_state = {k: v.detach().clone().cpu() for k, v in kept.state_dict().items()}
            return
        self.bad_epochs += 1
        if self.cfg.enabled and may_stop and self.bad_epochs >= self.cfg.patience:
            state.should_stop = True
            state.stop_reason = (f"early stopping: {self.cfg.monitor} did not improve for "
                                 f"{self.bad_epochs} epochs (best at epoch {self.best_epoch + 1})")

    def restore_best(self, model: torch.nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    @property
    def best_value(self) -> float:
        return self.best if self.lower_is_better else -self.best

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "best_state": self.best_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.bad_epochs, self.best_state = state["bad_epochs"], state["best_state"]


class Progress(Hook):
    """A tqdm bar per epoch showing the live train loss in a terminal; one plain line per epoch otherwise."""

    def __init__(self, mode: str, label: str = "train"):
        self.bar_mode = mode == "bar" or (mode == "auto" and sys.stderr.isatty())
        self.quiet = mode == "off"
        self.label = label
        self.bar = None
        self.started = 0.0

    def on_epoch_start(self, state: LoopState) -> None:
        self.started = time.perf_counter()
        if self.bar_mode and state.runtime.is_main:
            from tqdm import tqdm

            self.bar = tqdm(total=state.steps_per_epoch, initial=state.step_in_epoch, leave=False,
                            desc=f"{self.label} epoch {state.epoch + 1}/{state.spec.epochs}")

    def on_step_end(self, state: LoopState) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_metrics(self, state: LoopState, rows: MetricRows) -> None:
        # The live loss: the latest optimizer step's train loss, as the rows leave the device
        # (every trainer.log_every_steps), so the bar costs no extra device sync.
        losses = [value for name, value, _ in rows if name == "train/loss"]
        if self.bar is not None and losses:
            self.bar.set_postfix_str(f"loss={losses[-1]:.4f}", refresh=False)

    def on_epoch_end(self, state: LoopState, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.quiet or not state.runtime.is_main:
            return
        # Under the names details.json and MLflow use (the engine's own is epoch/train_loss).
        shown = " ".join(f"{name}={metrics[k]:.4f}" for k, name in (("epoch/train_loss", "train/loss"),
                                                                      ("val/loss", "val/loss"), ("val/acc", "val/acc"))
                         if k in metrics)
        print(f"[{self.label}] epoch {state.epoch + 1}/{state.spec.epochs} {shown} "
              f"({time.perf_counter() - self.started:.1f}s)", file=sys.stderr, flush=True)
