"""One optimizer step, and the on-device buffer of step metrics.

Step metrics (loss, grad norm, per-layer grad norms) stay on the device as tensors
and leave it once every `log_every_steps` in one transfer: calling `.item()` per
step would force a host-device sync on GPUs and cost Python time on CPUs.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from trainlab.engine.hooks import LoopState, MetricRows
from trainlab.engine.losses import LossFn, correct_count
from trainlab.engine.parallel import PipelinedModel, data_shard, full_value, grad_norm, no_sync
from trainlab.engine.runtime import all_reduce_sum


def train_step(state: LoopState, model: torch.nn.Module, micro: list[tuple[torch.Tensor, torch.Tensor]],
               global_size: int, loss_fn: LossFn, recorder: "StepRecorder") -> None:
    """Forward/backward over this rank's micro-batches of a global batch, then clip and update."""
    optimizer, scaler, runtime = state.optimizer, state.scaler, state.runtime
    lr = state.schedule.apply(optimizer, state.step)
    # Dropout masks are a pure function of (seed, step, rank): resume is exact at any step.
    # Only the generator the step draws from is reseeded: torch.manual_seed also queues a
    # lazy seed with a captured stack trace for every uninitialised backend (cuda, xpu,
    # mtia), about 0.3-1 ms a step on CPU (bench/RESULTS.md, engine overhead).
    step_seed = (state.seed * 1_000_003 + state.step) * 1_009 + runtime.rank
    torch.default_generator.manual_seed(step_seed)
    if runtime.device.type == "cuda":
        torch.cuda.manual_seed(step_seed)
    count = sum(len(y) for _, y in micro)
    step_loss = torch.zeros((), device=runtime.device)
    correct = torch.zeros((), device=runtime.device)

    def forward_backward() -> torch.Tensor:
        nonlocal step_loss, correct
        optimizer.zero_grad(set_to_none=True)
        step_loss, correct = step_loss.zero_(), correct.zero_()
        for i, (x, y) in enumerate(micro):
            last = i == len(micro) - 1
            # Under DDP/FSDP, gradients are reduced only on the step's last micro-batch.
            sync = no_sync(model) if runtime.distributed and not last else nullcontext()
            with sync:
                with runtime.autocast():
                    logits = model(x)
                loss = loss_fn(logits, y)
                # Each micro-batch weighs its share of the global batch; DDP/FSDP then average
                # over ranks (hence x world_size). So k micro-batches on n ranks equal one
                # big batch, also when the last batch splits unevenly.
                scaler.scale(loss * (len(y) * runtime.world_size / global_size)).backward()
            step_loss += loss.detach() * len(y)
            correct += correct_count(logits.detach(), y)
        return step_loss / count

    if state.spec.optimizer.name == "lbfgs":
        # The closure runs several times a step, and the line search tries points it may reject
        # (some with a huge loss): the step reports its first evaluation, the batch at the step's
        # start as for every other optimizer, so no rejected trial trips the divergence check.
        # (Dropout draws new masks at each evaluation. Reseeding for the same masks was tried:
        # with dropout 0.1 it diverged in 3 of 40 small runs, new masks in none; bench/RESULTS.md.)
        first: list[torch.Tensor] = []

        def closure() -> torch.Tensor:
            mean = forward_backward()
            if not first:
                first.extend([step_loss.clone(), correct.clone(), _total_norm(state.model)])
            return mean

        optimizer.step(closure)
        step_loss, correct, norm = first
    else:
        if isinstance(model, PipelinedModel):   # this rank's stage only; the loss is on the last
            optimizer.zero_grad(set_to_none=True)
            with runtime.autocast():
                mean_loss, correct, count = model.step(micro, global_size, loss_fn)
            step_loss = mean_loss * count
        else:
            forward_backward()
        scaler.unscale_(optimizer)
        norm = _clip(state)
        recorder.maybe_layer_norms(state)
        scaler.step(optimizer)
        scaler.update()
    recorder.record(step_loss / max(count, 1), correct, count, lr, norm)


def _clip(state: LoopState) -> torch.Tensor:
    """Clip by norm and/or value; returns the global gradient norm before clipping."""
    params = [p for p in state.model.parameters() if p.grad is not None]
    trainer, runtime = state.trainer, state.runtime
    # The norm of the whole gradient, also where ranks hold parts of it (fsdp, pipeline).
    norm = grad_norm(params, trainer, runtime)
    if trainer.clip_grad_value is not None:
        torch.nn.utils.clip_grad_value_(params, trainer.clip_grad_value)
        if trainer.clip_grad_norm is not None:   # value clipping changed the norm
            torch.nn.utils.clip_grads_with_norm_(params, trainer.clip_grad_norm, grad_norm(params, trainer, runtime))
        return norm
    if trainer.clip_grad_norm is not None:
        torch.nn.utils.clip_grads_with_norm_(params, trainer.clip_grad_norm, norm)
    return norm


def _total_norm(model: torch.nn.Module) -> torch.Tensor:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads)


@dataclass
class Flushed:
    """Buffered steps as plain floats: the rows hooks see, and what the divergence check reads."""

    rows: MetricRows
    steps: list[int]
    losses: list[float]   # averaged over ranks
    lrs: list[float]


class StepRecorder:
    """Buffers step metrics on the device and hands them over, as floats, when flushed."""

    def __init__(self, state: LoopState, model: torch.nn.Module):
        self.state = state
        self.groups = model.layer_groups() if hasattr(model, "layer_groups") else []
        self.steps: list[int] = []
        self.losses: list[torch.Tensor] = []
        self.norms: list[torch.Tensor] = []
        self.lrs: list[float] = []
        self.layer_steps: list[tuple[int, list[str]]] = []
        self.layer_norms: list[torch.Tensor] = []
        self.sums = torch.zeros(3, dtype=torch.float64, device=state.runtime.device)

    def record(self, loss: torch.Tensor, correct: torch.Tensor, count: int, lr: float,
               grad_norm: torch.Tensor) -> None:
        self.steps.append(self.state.step)
        self.losses.append(loss.float())
        self.norms.append(grad_norm.float().to(loss.device))
        self.lrs.append(lr)
        self.sums += torch.stack([loss.double() * count, correct.double(),
                                  torch.tensor(float(count), dtype=torch.float64, device=loss.device)])

    def maybe_layer_norms(self, state: LoopState) -> None:
        if not self.groups or state.step % state.trainer.layer_grad_norm_every:
            return
        # Frozen blocks have no gradient and are left out rather than reported as zero.
        norms = {}
        for name, params in self.groups:
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                norms[name] = full_value(torch.nn.utils.get_total_norm(grads)).float().to(self.sums.device)
        if not norms:
            return
        self.layer_steps.append((state.step, list(norms)))
        self.layer_norms.append(torch.stack(list(norms.values())))

    def due(self) -> bool:
        """Every log_every_steps, and before a step checkpoint (which saves the epoch sums)."""
        trainer, step = self.state.trainer, self.state.step
        checkpoint_due = trainer.checkpoint_every_steps and step % trainer.checkpoint_every_steps == 0
        return bool(step % trainer.log_every_steps == 0 or checkpoint_due)

    def flush(self) -> Flushed | None:
        """One device->host transfer for all buffered steps (summed into the epoch's sums)."""
        if not self.steps:
            return None
        state, runtime = self.state, self.state.runtime
        world = float(data_shard(state.trainer, runtime)[1])   # ranks that each saw part of a batch
        losses = (all_reduce_sum(torch.stack(self.losses), runtime) / world).tolist()
        norms = torch.stack(self.norms).tolist()
        sums = all_reduce_sum(self.sums.clone(), runtime).tolist()
        for key, value in zip(("loss", "correct", "count"), sums):
            state.epoch_sums[key] = state.epoch_sums.get(key, 0.0) + value
        self.sums.zero_()
        rows = [row for s, loss, lr, norm in zip(self.steps, losses, self.lrs, norms)
                for row in (("train/loss", loss, s), ("lr", lr, s), ("grad_norm", norm, s))]
        if state.scaler.is_enabled():
            rows.append(("loss_scale", state.scaler.get_scale(), self.steps[-1]))
        for (s, names), norms_at in zip(self.layer_steps, [n.tolist() for n in self.layer_norms]):
            rows.extend((f"grad_norm/{name}", value, s) for name, value in zip(names, norms_at))
        flushed = Flushed(rows, self.steps, losses, self.lrs)
        self.steps, self.losses, self.norms, self.lrs = [], [], [], []
        self.layer_steps, self.layer_norms = [], []
        return flushed
