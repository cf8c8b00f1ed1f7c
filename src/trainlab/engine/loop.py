"""`fit()`: the one training loop every stage uses.

    on_fit_start                       (resume from a checkpoint here)
    for epoch in epochs:
        on_epoch_start
        for step in optimizer steps:   (reshuffled per epoch, sharded per rank)
            augment the micro-batches  (trainer.augment; seeded by (seed, epoch, step))
            for micro-batch in step:   (gradient accumulation; DDP syncs on the last)
                forward under autocast, loss, backward (scaled for fp16)
            unscale, clip, optimizer step, lr for the next step
            every log_every_steps:     on_metrics, then the divergence check
            on_step_end                (trainer.averaging ema: the average takes the step first)
        swa from its start epoch:      the weights join the average; in the last epoch its
                                       batch-norm statistics are recomputed on train
        evaluate on val without autograd  (the average: ema every epoch, swa in the last)
        best-so-far update             (early stopping may ask to stop; never once swa averages)
        on_epoch_end                   (tracking, pruning, checkpoint last)
        stop if asked to
    keep the final weights:            swa's average once it started; else the best epoch's
                                       with early stopping enabled (under ema, the average's);
                                       else the last epoch's (ema: the average)
    on_fit_end

Every event reaches every hook on every rank, through one typed `Hooks` list.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from trainlab.config.schema import TrainerConfig, TrainSpec
from trainlab.engine.augment import Augment, resolve_augment
from trainlab.engine.averaging import Averaging, build_averaging, swa_tail
from trainlab.engine.budget import resolve_budget
from trainlab.engine.batches import BatchSource, TrainData, epoch_order, rows, to_device, training_plan
from trainlab.engine.checkpoint import Checkpointing
from trainlab.engine.hooks import BestSoFar, Hook, Hooks, LoopState, Progress
from trainlab.engine.losses import LossFn, build_loss, correct_count, has_classes
from trainlab.engine.optim import ParamGroup, Schedule, build_optimizer
from trainlab.engine.parallel import Parallel, data_shard
from trainlab.engine.runtime import (Runtime, all_reduce_sum, seed_everything, setup_runtime, tiny_step_kernels,
                                     tiny_steps)
from trainlab.engine.steps import Flushed, StepRecorder, train_step
from trainlab.errors import ParamsError, TrainingDiverged

EVAL_BATCH = 1024
# fp16's GradScaler skips steps whose gradients overflow and lowers the scale; a few
# skips in a row are normal, this many means the loss itself has diverged.
MAX_CONSECUTIVE_SKIPS = 20


@dataclass
class FitResult:
    history: list[dict[str, float]]   # per-epoch metrics
    best_epoch: int                   # by the early-stopping monitor; swa: the last (it validated the average)
    best_value: float                 # of the early-stopping monitor
    monitor: str
    stop_reason: str
    steps: int
    precision: str
    resumed_from_step: int | None = None


def fit(model: torch.nn.Module, train: TrainData, val: TrainData, spec: TrainSpec, trainer: TrainerConfig,
        *, seed: int, hooks: Sequence[Hook] = (), checkpointing: Checkpointing | None = None,
        groups: list[ParamGroup] | None = None, runtime: Runtime | None = None,
        label: str = "train", kind: str | None = None) -> FitResult:
    """Train `model` in place on `train`, validate on `val` every epoch; returns the history.

    `checkpointing` (resume at start, save at epoch ends) runs after every other hook. `kind`
    (table, series, image) is what `trainer.augment` augments for; None: none (`auto` is off)."""
    augment = resolve_augment(trainer, kind)
    runtime = runtime or setup_runtime(trainer)
    spec = resolve_budget(spec, trainer, len(train), kind).spec   # `auto` epochs/batch size -> numbers
    # Tiny steps: one thread, native kernels, a fused optimizer (see runtime.tiny_steps).
    sample_values = math.prod(train.x.shape[1:])
    tiny = tiny_steps(runtime, spec.batch_size, sample_values)
    with tiny_step_kernels(tiny, spec.batch_size * sample_values):
        return _train(model, train, val, spec, trainer, seed, hooks, checkpointing, groups, runtime, label, tiny,
                      augment)


def _train(model: torch.nn.Module, train: TrainData, val: TrainData, spec: TrainSpec, trainer: TrainerConfig,
           seed: int, hooks: Sequence[Hook], checkpointing: Checkpointing | None,
           groups: list[ParamGroup] | None, runtime: Runtime, label: str, tiny: bool,
           augment: Augment | None) -> FitResult:
    """fit() once the runtime, budget and thread count are settled: the loop of the module docstring."""
    seed_everything(seed)
    _check_compatible(spec, trainer, runtime, train)
    model.to(runtime.device)
    use_loader = trainer.loader == "dataloader"
    if not use_loader:
        train, val = to_device(train, runtime.device), to_device(val, runtime.device)
    batch_size = spec.batch_size
    data_rank, data_ranks = data_shard(trainer, runtime)
    plan = training_plan(len(train), batch_size, data_ranks, trainer.grad_accum)
    parallel = Parallel(model, trainer, spec, runtime)   # ddp, fsdp or pipeline: engine/parallel.py
    optimizer = build_optimizer(parallel.groups(groups or [ParamGroup("all", list(model.parameters()))]),
                                spec.optimizer, batch_size, fused=tiny)
    best = BestSoFar(spec.early_stopping)
    averaging = build_averaging(trainer, parallel.model, spec.epochs)   # None for averaging: none
    schedule = Schedule(spec.schedule, len(plan), spec.epochs, swa=swa_tail(trainer, len(plan), spec.epochs))
    # The average updates before the caller's hooks observe the step (and before checkpointing).
    state = LoopState(parallel.model, optimizer, schedule, runtime.grad_scaler(), runtime, spec, trainer, seed,
                      len(plan), best, Hooks([*([averaging] if averaging is not None else []), *hooks,
                                              Progress(trainer.progress, label)], checkpointing))
    forward_model = parallel.forward
    loss_fn = build_loss(spec.loss, regression=not has_classes(train.y))
    recorder, divergence = StepRecorder(state, parallel.model), DivergenceCheck(state)
    source = BatchSource(train, runtime.device, trainer.num_workers if use_loader else None)

    state.hooks.on_fit_start(state)
    resumed_from = state.step if state.step else None
    while state.epoch < spec.epochs and not state.should_stop:
        state.hooks.on_epoch_start(state)
        started = time.perf_counter()
        order = epoch_order(len(train), seed, state.epoch)
        batches = source.epoch(order, plan, state.step_in_epoch, data_rank, data_ranks, trainer.grad_accum)
        for global_size, micro in batches:
            if augment is not None:   # on the device, after either loader: one place for both
                micro = augment.step(micro, seed, state.epoch, state.step, global_size, data_rank, data_ranks)
            train_step(state, forward_model, micro, global_size, loss_fn, recorder)
            state.step += 1
            state.step_in_epoch += 1
            if recorder.due():
                _flush(state, recorder, divergence)
            state.hooks.on_step_end(state)
        _flush(state, recorder, divergence)
        # The averaged weights where this epoch validates them (ema; swa's last epoch), else None.
        averaged = averaging.end_epoch(state, train) if averaging is not None else None
        state.validated = averaged
        evaluated = forward_model if averaged is None else averaged
        metrics = _epoch_metrics(state, evaluated, val, loss_fn, time.perf_counter() - started)
        state.history.append(metrics)
        state.schedule.end_epoch(metrics.get(best.cfg.monitor, math.nan), best.lower_is_better, state.step)
        best.update(state, metrics, weights=averaged,
                    may_stop=averaging is None or not averaging.in_swa(state))
        state.hooks.on_epoch_end(state, metrics)
        state.epoch += 1
        state.step_in_epoch, state.epoch_sums = 0, {}
    averaged_out = _keep_final_weights(state, averaging, train)
    state.hooks.on_fit_end(state)
    parallel.finish()
    return _result(state, averaging, averaged_out, resumed_from)


def _result(state: LoopState, averaging: Averaging | None, averaged_out: bool,
            resumed_from: int | None) -> FitResult:
    """The fit's summary; under swa the kept epoch is the last, which validated the average."""
    best, reason = state.best, state.stop_reason or "completed all epochs"
    kept_epoch, kept_value = best.best_epoch, best.best_value
    if averaging is not None:
        note, last_kept = averaging.summary(state, averaged_out)   # swa: the epochs averaged, or why none were
        reason += note
        if last_kept:   # swa: the last epoch validated the average, which is what the fit hands back
            kept_epoch, kept_value = len(state.history) - 1, state.history[-1].get(best.cfg.monitor, math.nan)
    return FitResult(state.history, kept_epoch, kept_value, best.cfg.monitor, reason, state.step,
                     state.runtime.precision, resumed_from)


def _keep_final_weights(state: LoopState, averaging: Averaging | None, train: TrainData) -> bool:
    """Leave in `state.model` the weights the fit hands back; True if they are the average."""
    best = state.best
    if averaging is not None and averaging.finish(state, train, best.cfg.enabled):
        return True
    if best.cfg.enabled:
        best.restore_best(state.model)   # under fsdp the sharded module; finish() copies it back
    return False


def _flush(state: LoopState, recorder: StepRecorder, divergence: "DivergenceCheck") -> None:
    flushed = recorder.flush()
    if flushed is not None:
        state.hooks.on_metrics(state, flushed.rows)   # first: the curves keep the steps up to a NaN
        divergence.check(flushed)


class DivergenceCheck:
    """Raises TrainingDiverged on a NaN/inf loss, after falling back to the best weights so far."""

    def __init__(self, state: LoopState):
        self.state = state
        self.tolerant = state.scaler.is_enabled()   # fp16 loss scaling skips overflowing steps
        self.consecutive_bad = 0

    def check(self, flushed: Flushed) -> None:
        for step, loss, lr in zip(flushed.steps, flushed.losses, flushed.lrs):
            if math.isfinite(loss):
                self.consecutive_bad = 0
                continue
            self.consecutive_bad += 1
            if self.tolerant and self.consecutive_bad < MAX_CONSECUTIVE_SKIPS:
                continue
            self.state.best.restore_best(self.state.model)
            raise TrainingDiverged(_divergence_message(self.state, step, loss, lr))


def _divergence_message(state: LoopState, step: int, loss: float, lr: float) -> str:
    if state.runtime.precision == "fp16" and not state.scaler.is_enabled():
        cause = "fp16 overflow without loss scaling"
    elif lr >= 0.1 or state.step < 3 * state.steps_per_epoch:
        cause = ("the learning rate is likely too high (lower the stage's optimizer.lr, add "
                 "schedule.warmup_epochs or set trainer.clip_grad_norm)")
    else:
        cause = ("numerical instability (check inputs for extreme values, lower the stage's "
                 "optimizer.lr, set trainer.clip_grad_norm)")
    best = state.best
    kept = (f"kept the best weights (epoch {best.best_epoch + 1})" if best.best_state is not None
            else "no epoch finished, no weights kept")
    return f"training diverged: loss became {loss} at step {step} (epoch {state.epoch + 1}, lr {lr:.3g}); {cause}; {kept}"


def _check_compatible(spec: TrainSpec, trainer: TrainerConfig, runtime: Runtime, train: TrainData) -> None:
    if spec.early_stopping.monitor == "val/acc" and not has_classes(train.y):
        raise ParamsError("early_stopping.monitor: val/acc needs class labels, but the target is a number "
                          "to predict (regression); use val/loss")
    if spec.optimizer.name == "lbfgs":
        if trainer.grad_accum != 1 or runtime.precision == "fp16":
            raise ParamsError("optimizer.name: lbfgs re-evaluates the loss in a closure and needs "
                              "trainer.grad_accum: 1 and a precision other than fp16")


def _epoch_metrics(state: LoopState, model: torch.nn.Module, val: TrainData, loss_fn: LossFn,
                   seconds: float) -> dict[str, float]:
    sums = state.epoch_sums
    seen = max(sums.get("count", 0.0), 1.0)
    val_loss, val_acc = evaluate(model, val, loss_fn, state.runtime)
    metrics = {"epoch/train_loss": sums.get("loss", math.nan) / seen, "val/loss": val_loss}
    if has_classes(val.y):   # regression targets (a pretext task) have no accuracy: none is reported
        metrics.update({"epoch/train_acc": sums.get("correct", 0.0) / seen, "val/acc": val_acc})
    return {
        **metrics,
        "epoch/lr": max(group["lr"] for group in state.optimizer.param_groups),
        "epoch/time_s": seconds,
        "epoch/samples_per_s": sums.get("count", 0.0) / max(seconds, 1e-9),
    }


@torch.inference_mode()
def evaluate(model: torch.nn.Module, data: TrainData, loss_fn: LossFn, runtime: Runtime) -> tuple[float, float]:
    """Mean loss and accuracy over `data`, sharded across ranks and summed; no autograd."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=runtime.device)
    index = torch.arange(runtime.rank, len(data), runtime.world_size)
    chunks = list(index.split(EVAL_BATCH))
    # Every rank runs as many forwards (each is a collective under ddp's buffer broadcast and
    # fsdp's weight gathers), also when its shard is a row short of the others' or empty.
    largest = -(-len(data) // runtime.world_size)
    chunks += [index[:0]] * (-(-largest // EVAL_BATCH) - len(chunks))
    for chunk in chunks:
        x, y = rows(data, chunk, runtime.device)
        with runtime.autocast():
            logits = model(x)
        if not len(chunk):
            continue
        totals[0] += loss_fn(logits, y).double() * len(chunk)
        totals[1] += correct_count(logits, y)
        totals[2] += len(chunk)
    model.train(was_training)
    loss, correct, count = all_reduce_sum(totals, runtime).tolist()
    return loss / max(count, 1), correct / max(count, 1)


__all__ = ["FitResult", "TrainingDiverged", "evaluate", "fit"]
