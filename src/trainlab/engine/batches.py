"""Mini-batches: reshuffled every epoch from (seed, epoch), sharded across DDP ranks.

Small data lives on the device as tensors and batches are index lookups, with no
DataLoader and no per-step Python collation. Large data goes through a DataLoader
over memory-mapped arrays with worker processes. Both yield the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from trainlab.errors import ParamsError


@dataclass(frozen=True)
class TrainData:
    """Features and targets of one split (tensors, or memory-mapped arrays for the loader path)."""

    x: torch.Tensor | np.ndarray
    y: torch.Tensor | np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of an epoch: a pure function of (seed, epoch), so resume replays it."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=gen)


def step_plan(n: int, batch_size: int, world_size: int, grad_accum: int) -> list[tuple[int, int]]:
    """(start, stop) of each global batch. A last partial batch that cannot give every
    micro-batch on every rank two samples is dropped (the epoch's other batches hold them
    next epoch): a step on one sample is a step on its noise, and batch norm in training
    mode cannot normalise one value per channel (a ResNet's last stage at 1x1 raises).
    A lone batch is kept while it gives each micro-batch one sample."""
    plan = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if plan:
        per_micro = 2 if len(plan) > 1 else 1
        if plan[-1][1] - plan[-1][0] < per_micro * world_size * grad_accum:
            plan.pop()
    return plan


def training_plan(n: int, batch_size: int, world_size: int, grad_accum: int) -> list[tuple[int, int]]:
    """`step_plan`, refused in one line when the split cannot fill a single step."""
    plan = step_plan(n, batch_size, world_size, grad_accum)
    if not plan:
        raise ParamsError(f"trainer.batch_size: the train split ({n} samples) is too small "
                          f"for {world_size} device(s) x {grad_accum} micro-batches")
    return plan


def micro_batches(order: torch.Tensor, start: int, stop: int, rank: int, world_size: int,
                  grad_accum: int) -> list[torch.Tensor]:
    """This rank's share of a global batch (interleaved like DistributedSampler), split into
    `grad_accum` micro-batches. Over all ranks the shares are exactly the global batch."""
    mine = order[start:stop][rank::world_size]
    return list(torch.tensor_split(mine, grad_accum))


def to_device(data: TrainData, device: torch.device) -> TrainData:
    """Keep small data on the device as tensors (the memory loader).

    Tensors are moved as tensors: np.asarray on a CUDA tensor would raise, and data a caller
    already put on the GPU should not make a round trip through host memory.
    """
    if isinstance(data.x, torch.Tensor):
        x = data.x.to(device=device, dtype=torch.float32)
    else:
        x = torch.as_tensor(np.asarray(data.x), dtype=torch.float32).to(device)
    y = data.y if isinstance(data.y, torch.Tensor) else torch.as_tensor(np.asarray(data.y))
    return TrainData(x, y.to(device=device, dtype=torch.float32 if y.is_floating_point() else torch.long))


def rows(data: TrainData, index: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples `index` of `data` on `device`, from tensors or (memory-mapped) arrays."""
    if isinstance(data.x, torch.Tensor):
        index = index.to(data.x.device)
        return data.x.index_select(0, index).to(device), data.y.index_select(0, index).to(device)
    picked = index.numpy()
    x = torch.as_tensor(data.x[picked], dtype=torch.float32)
    y = torch.as_tensor(data.y[picked])
    return x.to(device), (y.float() if y.is_floating_point() else y.long()).to(device)


class BatchSource:
    """Where each epoch's micro-batches come from, set up once per fit.

    num_workers None: the data is on the device already and batches are index lookups.
    Otherwise one DataLoader reads the same index lists from (memory-mapped) arrays; its
    worker processes stay up from epoch to epoch (`persistent_workers`) instead of being
    started again each epoch, and only the index lists of the new epoch are sent to them.
    """

    def __init__(self, data: TrainData, device: torch.device, num_workers: int | None):
        self.data, self.device = data, device
        self._keys = _Keys()
        self._loader = None if num_workers is None else torch.utils.data.DataLoader(
            _IndexedArrays(data), sampler=self._keys, batch_size=None, num_workers=num_workers,
            persistent_workers=num_workers > 0,
            # Page-locked batches let the non_blocking copies below overlap the GPU's work.
            pin_memory=device.type == "cuda")

    def epoch(self, order: torch.Tensor, plan: list[tuple[int, int]], first_step: int, rank: int,
              world_size: int, grad_accum: int) -> Iterator[tuple[int, list[tuple[torch.Tensor, torch.Tensor]]]]:
        """Yield, per optimizer step from `first_step` on, (global batch size, this rank's micro-batches)."""
        todo = plan[first_step:]
        steps = [micro_batches(order, a, b, rank, world_size, grad_accum) for a, b in todo]
        sizes = iter([b - a for a, b in todo])
        if self._loader is None:
            x, y, device = self.data.x, self.data.y, self.device
            for micros in steps:
                yield next(sizes), [(x.index_select(0, i.to(device)), y.index_select(0, i.to(device)))
                                    for i in micros]
            return
        self._keys.items = [index for micros in steps for index in micros]
        pending = []
        for x, y in self._loader:
            pending.append((x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)))
            if len(pending) == grad_accum:
                yield next(sizes), pending
                pending = []


class _Keys(torch.utils.data.Sampler):
    """The current epoch's micro-batch index lists, handed to the loader's workers in order."""

    def __init__(self) -> None:
        self.items: list[torch.Tensor] = []

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class _IndexedArrays(torch.utils.data.Dataset):
    """Item `indices` is the micro-batch of those samples, read from arrays (possibly memory-mapped)."""

    def __init__(self, data: TrainData):
        self.data = data

    def __getitem__(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        wanted = indices.numpy()
        ascending = np.argsort(wanted)             # sorted reads are sequential on disk
        restore = np.argsort(ascending)
        x = np.asarray(self.data.x[wanted[ascending]], dtype=np.float32)[restore]
        y = np.asarray(self.data.y[wanted[ascending]])[restore]
        y = y.astype(np.float32 if y.dtype.kind == "f" else np.int64)
        return torch.from_numpy(x), torch.from_numpy(y)
