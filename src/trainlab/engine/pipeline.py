"""`trainer.strategy: pipeline`: consecutive blocks on consecutive ranks.

The model's units (backbone blocks in order, then the head) are cut into one run of
consecutive units per rank, balanced by parameter count. Every step, the whole global
batch flows through the ranks as `trainer.grad_accum` micro-batches on PyTorch's GPipe
schedule (all forwards, then all backwards): rank r works on micro-batch i while rank
r+1 works on micro-batch i-1, so more micro-batches than ranks keep the ranks busy.

Each rank trains only its own units, but keeps a copy of the whole model: before each
evaluation, checkpoint and at the end of fit, every rank broadcasts its units' weights,
so evaluation, checkpoints and the model handed back are the full model, as in one process.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from trainlab.engine.runtime import Runtime
from trainlab.errors import ParamsError


def units(model: nn.Module) -> list[nn.Module]:
    """The model as a sequence: backbone blocks, input side first, then the head."""
    if hasattr(model, "backbone") and hasattr(model, "head"):
        return [*model.backbone.children(), model.head]
    return list(model.children())


def split_stages(model: nn.Module, ranks: int) -> list[list[nn.Module]]:
    """Consecutive units per rank, each run holding parameters, the largest run as small as possible."""
    seq = units(model)
    sizes = [sum(p.numel() for p in unit.parameters()) for unit in seq]
    weighted = [i for i, size in enumerate(sizes) if size]
    if len(weighted) < ranks:
        raise ParamsError(f"trainer.devices: {ranks} pipeline stages need at least {ranks} blocks with "
                          f"parameters, and this model has {len(weighted)} (backbone blocks and head); "
                          f"use fewer devices, a deeper model or strategy ddp/fsdp")
    cuts = _balanced_cuts([sizes[i] for i in weighted], ranks)
    # A parameter-free unit (pooling, flatten) runs on the stage of the weighted unit before it.
    starts = [0] + [weighted[c] for c in cuts[1:]]
    bounds = starts + [len(seq)]
    return [seq[bounds[r]:bounds[r + 1]] for r in range(ranks)]


def _balanced_cuts(sizes: list[int], parts: int) -> list[int]:
    """Start indices of `parts` contiguous runs of `sizes` minimising the largest run's sum."""
    n = len(sizes)
    prefix = [0]
    for size in sizes:
        prefix.append(prefix[-1] + size)
    inf = float("inf")
    # best[k][i]: the smallest possible largest run when the first i sizes make k runs.
    best = [[inf] * (n + 1) for _ in range(parts + 1)]
    start = [[0] * (n + 1) for _ in range(parts + 1)]
    best[0][0] = 0
    for k in range(1, parts + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                cost = max(best[k - 1][j], prefix[i] - prefix[j])
                if cost < best[k][i]:
                    best[k][i], start[k][i] = cost, j
    cuts, i = [], n
    for k in range(parts, 0, -1):
        cuts.append(start[k][i])
        i = start[k][i]
    return cuts[::-1]


def owned_parameters(model: nn.Module, runtime: Runtime) -> set[int]:
    """ids of the parameters this rank trains."""
    mine = split_stages(model, runtime.world_size)[runtime.rank]
    return {id(p) for unit in mine for p in unit.parameters()}


def sync_stages(model: nn.Module, runtime: Runtime) -> None:
    """Every rank's copy of the model gets each stage's current weights and buffers from its owner."""
    for owner, stage in enumerate(split_stages(model, runtime.world_size)):
        tensors = [t for unit in stage for t in unit.state_dict(keep_vars=True).values()]
        for dtype in sorted({t.dtype for t in tensors}, key=str):
            same = [t.data for t in tensors if t.dtype == dtype]
            # One broadcast per stage and dtype instead of one per tensor.
            flat = torch.cat([t.reshape(-1) for t in same])
            dist.broadcast(flat, src=owner)
            if runtime.rank != owner:
                offset = 0
                for t in same:
                    t.copy_(flat[offset:offset + t.numel()].view_as(t))
                    offset += t.numel()


class PipelinedModel(nn.Module):
    """What the loop calls under pipeline: `step()` trains this rank's stage on a global batch;
    called as a module (evaluation) it is the whole model, synced from every stage first."""

    def __init__(self, model: nn.Module, runtime: Runtime):
        super().__init__()
        self.full, self.runtime = model, runtime
        stages = split_stages(model, runtime.world_size)
        self.stage_module = nn.Sequential(*stages[runtime.rank])
        self.is_first, self.is_last = runtime.rank == 0, runtime.rank == runtime.world_size - 1
        self._schedules: dict[tuple, object] = {}
        self._loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.full(x)

    def train(self, mode: bool = True) -> "PipelinedModel":
        if not mode:   # evaluation follows: every rank needs every stage's latest weights
            sync_stages(self.full, self.runtime)
        return super().train(mode)

    def step(self, micro: list[tuple[torch.Tensor, torch.Tensor]], global_size: int,
             loss_fn: Callable) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Forward and backward of one global batch; (mean loss, correct, count) on the last
        stage, zeros elsewhere (so that summing over ranks gives the batch's values)."""
        from trainlab.engine.losses import correct_count

        x, y = torch.cat([m[0] for m in micro]), torch.cat([m[1] for m in micro])
        # The schedule sizes its receive buffers from the first micro-batch, so all must be
        # equal: an uneven split (an epoch's last, partial batch) goes as one micro-batch.
        equal = len({len(m[1]) for m in micro}) == 1
        schedule = self._schedule(len(micro) if equal else 1, micro[0][0] if equal else x)
        # Each micro-batch's loss weighs its share of the global batch, as in one process.
        self._loss = lambda out, target: loss_fn(out, target) * (len(target) / global_size)
        losses: list[torch.Tensor] = []
        kwargs = {"target": y, "losses": losses} if self.is_last else {}
        output = schedule.step(x, **kwargs) if self.is_first else schedule.step(**kwargs)
        zero = torch.zeros((), device=self.runtime.device)
        if not self.is_last:
            return zero, zero, 0
        return torch.stack(losses).sum().detach().float(), correct_count(output.detach(), y), len(y)

    def _schedule(self, n_micro: int, example: torch.Tensor):
        """One GPipe schedule per micro-batch shape."""
        from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

        key = (n_micro, tuple(example.shape))
        if key not in self._schedules:
            inputs, outputs = self._stage_shapes(example)
            stage = PipelineStage(self.stage_module, self.runtime.rank, self.runtime.world_size,
                                  self.runtime.device, input_args=inputs, output_args=outputs)
            self._schedules[key] = ScheduleGPipe(stage, n_micro, loss_fn=lambda out, target: self._loss(out, target),
                                                 scale_grads=False)
        return self._schedules[key]

    @torch.no_grad()
    def _stage_shapes(self, example: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This stage's input and output for a micro-batch like `example`, from a local forward.

        Given these, the stage skips its own shape inference, a forward in training mode on
        placeholder data that would move batch-norm statistics (measured: to NaN).
        """
        modes = {m: m.training for m in self.full.modules()}
        self.full.eval()
        try:
            x = torch.zeros_like(example)
            with self.runtime.autocast():
                for rank, stage in enumerate(split_stages(self.full, self.runtime.world_size)):
                    y = nn.Sequential(*stage)(x)
                    if rank == self.runtime.rank:
                        # Activations between stages carry gradients back; the data does not.
                        return x.requires_grad_(rank > 0), y.requires_grad_(True)
                    x = y
        finally:
            for module, mode in modes.items():
                module.training = mode
        raise AssertionError("unreachable: every rank runs a stage")
