"""The learning-rate range test (Smith 2017; fastai's and Lightning's `lr_find`): `optimizer.lr: auto`.

The rate rises exponentially, step after step, from START_LR to END_LR while the training
loss is smoothed and recorded; the test stops once the smoothed loss has grown to
DIVERGED_FACTOR times its minimum (or is not finite).

The rule: the *knee*, the rate at which the smoothed loss first comes within 10% of its whole
fall from the start to its minimum (interpolated between the two steps around it), times
S / 1000 for a test of S steps (a tenth of it at 100 steps, a third at 300, a fortieth at 25).
Past the knee more rate buys no more progress within the test, and the fraction keeps the
choice in the steep descent. The fraction scales with the length because the knee does: up
to rate r, an exponential ramp of S steps has summed r * S / ln(END_LR / START_LR) of rate, so
the loss reaches a given progress at a rate ~ 1 / S (a short test chooses a high knee).
On 7 small tasks (MLP, CNN, ResNet; SGD, Adam, AdamW; 3 seeds each) against the best of a
7-rate grid a factor of 3 apart, knee * S / 1000 was within one grid step in 20, 19, 21 and
16 of 21 tests of 25, 50, 100 and 300 steps (a fixed knee / 10: 7, 13, 16 and 14; the
minimum / 10 and the steepest descent, Lightning's suggestion, fewer): bench/lr_rule.py,
bench/RESULTS.md section 19.
A test whose loss fell by less than FELL_BY_NOISE times its noise is run again RETRY_FACTOR
times longer (at most MAX_STEPS; conv nets often need ~300 steps to show a fall), so a test
costs at most 4/3 of the length that reads; if even at MAX_STEPS the loss did not fall beyond
FELL_AT_ALL times its noise, no rate is chosen (`chosen` None).

The test runs the loop's own optimizer step (`train_step`: AMP and loss scaling, gradient
accumulation, clipping, DDP's gradient averaging) on a fresh optimizer of the same kind,
and puts back the model's weights and every random-number generator afterwards, so the
real training starts exactly where it would have with a fixed rate. Under DDP every rank
records the same all-reduced loss, hence chooses the same rate.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from trainlab.config.schema import TrainerConfig, TrainSpec
from trainlab.engine.budget import resolve_budget
from trainlab.engine.batches import BatchSource, TrainData, epoch_order, to_device, training_plan
from trainlab.engine.hooks import BestSoFar, Hooks, LoopState
from trainlab.engine.losses import build_loss, has_classes
from trainlab.engine.optim import ParamGroup, build_optimizer, effective_lr
from trainlab.engine.parallel import Parallel, data_shard, strategy_of
from trainlab.engine.runtime import Runtime, setup_runtime, tiny_step_kernels, tiny_steps
from trainlab.engine.steps import StepRecorder, train_step
from trainlab.errors import ParamsError

START_LR, END_LR = 1.0e-7, 10.0
# The test's length: this share of the optimizer steps of every fit that uses its rate (under
# cross-validation the folds' and the refit's), within these bounds; a faint fall reruns it
# RETRY_FACTOR times longer. Shorter tests choose higher knees; the rule scales with the length.
SHARE_OF_TRAINING = 0.05
MIN_STEPS, MAX_STEPS, RETRY_FACTOR = 25, 300, 4
DIVERGED_FACTOR = 4.0
KNEE, KNEE_STEPS = 0.1, 1000.0  # the rule: where the loss is within 10% of its fall to the minimum, * S / 1000
# A fall of the smoothed loss below this many times its noise is too faint to read the knee
# off: the test runs again, longer; at MAX_STEPS a fall beyond FELL_AT_ALL times the noise is
# read; below that the loss did not fall (no rate is chosen).
FELL_BY_NOISE, FELL_AT_ALL = 8.0, 3.0


@dataclass
class RangeTest:
    """What a range test saw and chose. `chosen` is None when the loss did not fall beyond its noise."""

    lrs: list[float] = field(default_factory=list)        # the main group's rate at each step
    losses: list[float] = field(default_factory=list)     # the training loss at each step
    smoothed: list[float] = field(default_factory=list)   # its bias-corrected moving average
    chosen: float | None = None
    steepest: float | None = None
    stop: str = ""
    seconds: float = 0.0                                  # what the test took (a resumed stage's: the first run's)
    noise: float = 0.0                                    # the smoothed loss's noise before anything is learnt
    steps: int = 0                                        # the ramp's length (the recorded test may stop earlier)
    steps_run: int = 0                                    # every attempt's steps together: the test's cost

    FIELDS: ClassVar[tuple[str, ...]] = ("lrs", "losses", "smoothed", "chosen", "steepest", "stop", "seconds",
                                         "noise", "steps", "steps_run")

    def to_dict(self) -> dict:
        return {key: getattr(self, key) for key in self.FIELDS}

    @classmethod
    def from_dict(cls, blob: dict) -> "RangeTest":
        return cls(**{key: blob[key] for key in cls.FIELDS if key in blob})


def range_test_steps(training_steps: int) -> int:
    return min(MAX_STEPS, max(MIN_STEPS, round(SHARE_OF_TRAINING * training_steps)))


def check_range_test_offered(spec: TrainSpec, trainer: TrainerConfig, where: str) -> None:
    """One line where `lr: auto` cannot be measured: L-BFGS, and strategies that split the model."""
    if spec.optimizer.name == "lbfgs":
        raise ParamsError(f"{where}.optimizer.lr: auto is not offered for lbfgs (its line search sets "
                          f"each step's length); give a number")
    if trainer.devices > 1 and trainer.strategy != "ddp":
        raise ParamsError(f"{where}.optimizer.lr: auto is not offered with trainer.strategy "
                          f"{trainer.strategy}; use ddp or give a number")


def lr_range_test(model: torch.nn.Module, train: TrainData, spec: TrainSpec, trainer: TrainerConfig, *,
                  seed: int, steps: int, groups: list[ParamGroup] | None = None,
                  runtime: Runtime | None = None) -> RangeTest:
    """Run the test on `model` (its weights put back afterwards) and choose a rate for the
    optimizer's main group, after the batch-size scaling rule (see the module docstring)."""
    runtime = runtime or setup_runtime(trainer)
    spec = resolve_budget(spec, trainer, len(train)).spec   # `auto` batch size -> a number, as fit() does
    if strategy_of(trainer, runtime) != "ddp" or spec.optimizer.name == "lbfgs":
        raise ParamsError("optimizer.lr: auto is not offered with lbfgs, fsdp or pipeline; give a number")
    saved_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    saved_rng, was_training = _rng_states(), model.training
    started = time.perf_counter()
    sample_values = math.prod(train.x.shape[1:])
    try:
        with tiny_step_kernels(tiny_steps(runtime, spec.batch_size, sample_values),
                               spec.batch_size * sample_values):
            test = _sweep(model, train, spec, trainer, seed, steps, groups, runtime)
            tried, ran = [steps], len(test.lrs)
            while not _choose(test, FELL_BY_NOISE) and tried[-1] < MAX_STEPS:
                # Too short to see the loss fall clearly (a hard task, a conv net or noisy
                # batches need more steps): again, longer, from the same weights and random state.
                model.load_state_dict(saved_weights)
                _set_rng_states(saved_rng)
                tried.append(min(MAX_STEPS, tried[-1] * RETRY_FACTOR))
                test = _sweep(model, train, spec, trainer, seed, tried[-1], groups, runtime)
                ran += len(test.lrs)
            if len(tried) > 1:
                test.stop += f" (run again at {tried[-1]} steps: in {tried[-2]} the loss fell too little to read)"
            if test.chosen is None:
                _choose(test, FELL_AT_ALL)
            test.steps_run = ran
            test.seconds = time.perf_counter() - started
            return test
    finally:
        model.load_state_dict(saved_weights)
        model.train(was_training)
        _set_rng_states(saved_rng)


def _sweep(model: torch.nn.Module, train: TrainData, spec: TrainSpec, trainer: TrainerConfig, seed: int,
           steps: int, groups: list[ParamGroup] | None, runtime: Runtime) -> RangeTest:
    model.to(runtime.device)
    model.train()
    if trainer.loader != "dataloader":
        train = to_device(train, runtime.device)
    data_rank, data_ranks = data_shard(trainer, runtime)
    plan = training_plan(len(train), spec.batch_size, data_ranks, trainer.grad_accum)
    parallel = Parallel(model, trainer, spec, runtime)
    # Rates are set per step as multiples of each group's scale: a unit base rate makes
    # `initial_lr` the group's scale (backbone_lr_scale), the main group's 1.
    unit = spec.optimizer.model_copy(update={"lr": 1.0, "reference_batch_size": None})
    optimizer = build_optimizer(parallel.groups(groups or [ParamGroup("all", list(model.parameters()))]),
                                unit, spec.batch_size)
    ramp = _Ramp(steps)
    state = LoopState(parallel.model, optimizer, ramp, runtime.grad_scaler(), runtime, spec, trainer, seed,
                      len(plan), BestSoFar(spec.early_stopping), Hooks([]))
    loss_fn = build_loss(spec.loss, regression=not has_classes(train.y))
    recorder = StepRecorder(state, parallel.model)
    source = BatchSource(train, runtime.device, trainer.num_workers if trainer.loader == "dataloader" else None)
    result, smoother, epoch = RangeTest(), _Smoother(steps), 0
    while state.step < steps and not result.stop:
        order = epoch_order(len(train), seed, epoch)
        for global_size, micro in source.epoch(order, plan, 0, data_rank, data_ranks, trainer.grad_accum):
            train_step(state, parallel.forward, micro, global_size, loss_fn, recorder)
            flushed = recorder.flush()
            result.lrs.append(flushed.lrs[0])
            result.losses.append(flushed.losses[0])
            state.step += 1
            result.stop = smoother.add(result)
            if result.stop or state.step >= steps:
                break
        epoch += 1
    parallel.finish()
    result.stop = result.stop or "reached the end of the range"
    result.steps = steps
    # The swept multiples as the main group's rates: the batch-size scaling rule applies to them too.
    scale = effective_lr(spec.optimizer.model_copy(update={"lr": 1.0}), spec.batch_size)
    result.lrs = [lr * scale for lr in result.lrs]
    early = np.asarray(result.losses[:max(5, len(result.losses) // 5)], dtype=float)
    # The step losses before anything is learnt (tiny rates) give the noise of the average.
    result.noise = float(np.std(early[np.isfinite(early)])) * math.sqrt((1 - smoother.beta) / (1 + smoother.beta))
    return result


class _Ramp:
    """The schedule of a range test: the rate START_LR * (END_LR / START_LR) ** (step / (steps - 1))."""

    def __init__(self, steps: int):
        self.steps = steps

    def rate(self, step: int) -> float:
        return START_LR * (END_LR / START_LR) ** (step / max(1, self.steps - 1))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        rate = self.rate(step)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * rate
        return rate


class _Smoother:
    """A bias-corrected exponential moving average of the step losses, and the divergence rule.

    Its window is about a tenth of the test (fastai: 0.98 over 100 steps), so that a short
    test is not dominated by the lag of a long window."""

    def __init__(self, steps: int):
        self.beta = min(0.98, max(0.6, 1.0 - 10.0 / steps))
        self.average, self.count = 0.0, 0

    def add(self, result: RangeTest) -> str:
        """Smooth the last recorded loss into `result.smoothed`; a reason to stop, or ''."""
        loss = result.losses[-1]
        if not math.isfinite(loss):
            result.smoothed.append(math.inf)
            return f"the loss became {loss} at lr multiple {result.lrs[-1]:.3g}"
        self.count += 1
        self.average = self.beta * self.average + (1 - self.beta) * loss
        result.smoothed.append(self.average / (1 - self.beta ** self.count))
        if self.count > 3 and result.smoothed[-1] > DIVERGED_FACTOR * min(result.smoothed):
            return f"the loss diverged ({DIVERGED_FACTOR:g}x its minimum)"
        return ""


def _choose(result: RangeTest, noise_multiple: float) -> bool:
    """Fill `chosen` and `steepest` (module docstring) if the smoothed loss fell by more than
    `noise_multiple` times its noise; True if it did."""
    smooth = np.where(np.isfinite(result.smoothed), result.smoothed, np.inf)
    skip = max(1, len(smooth) // 10)   # the first steps: a moving average of too few losses
    if np.isfinite(smooth).sum() <= skip + 2:
        return False
    low = int(np.argmin(smooth))
    fall = float(np.median(smooth[:skip + 1])) - smooth[low]
    if low <= skip or fall <= noise_multiple * result.noise:
        return False
    lrs = np.asarray(result.lrs)
    result.chosen = _knee(lrs, smooth, smooth[low] + KNEE * fall) * result.steps / KNEE_STEPS
    slopes = np.gradient(smooth[:low + 1], np.log(lrs[:low + 1]))
    result.steepest = float(lrs[skip + int(np.argmin(slopes[skip:]))])
    return True


def _knee(lrs: np.ndarray, smooth: np.ndarray, level: float) -> float:
    """The rate at which the smoothed loss first reaches `level`, interpolated (log rate)
    between the two steps around it: the first step at or below `level` overshoots it by half
    a step on average, a factor of 2 in rate in a test of 25 steps."""
    at = int(np.argmax(smooth <= level))
    if at == 0:
        return float(lrs[0])
    share = (smooth[at - 1] - level) / (smooth[at - 1] - smooth[at])
    return float(math.exp(math.log(lrs[at - 1]) + share * math.log(lrs[at] / lrs[at - 1])))


def _rng_states() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return torch.get_rng_state(), cuda, np.random.get_state(), random.getstate()


def _set_rng_states(states: tuple) -> None:
    cpu, cuda, numpy_state, python_state = states
    torch.set_rng_state(cpu)
    if cuda:
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(numpy_state)
    random.setstate(python_state)
