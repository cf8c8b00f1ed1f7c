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
    """(start, stop) of each global batch; a last partial batch too small to give every
    micro-batch on every rank a sample is dropped."""
    plan = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if plan and plan[-1][1] - plan[-1][0] < world_size * grad_accum:
        plan.pop()
    return plan


def micro_batches(order: torch.Tensor, start: int, stop: int, rank: int, world_size: int,
                  grad_accum: int) -> list[torch.Tensor]:
    """This rank's share of a global batch (interleaved like DistributedSampler), split into
    `grad_accum` micro-batches. Over all ranks the shares are exactly the global batch."""
    mine = order[start:stop][rank::world_size]
    return list(torch.tensor_split(mine, grad_accum))


def to_device(data: TrainData, device: torch.device) -> TrainData:
    """Keep small data on the device as tensors (the memory loader)."""
    x = torch.as_tensor(np.asarray(data.x), dtype=torch.float32).to(device)
    y_np = np.asarray(data.y)
    y = torch.as_tensor(y_np, dtype=torch.float32 if y_np.dtype.kind == "f" else torch.long).to(device)
    return TrainData(x, y)


def iterate_epoch(data: TrainData, order: torch.Tensor, plan: list[tuple[int, int]], first_step: int,
                  rank: int, world_size: int, grad_accum: int, device: torch.device,
                  num_workers: int | None) -> Iterator[tuple[int, list[tuple[torch.Tensor, torch.Tensor]]]]:
    """Yield, per optimizer step from `first_step` on, (global batch size, this rank's micro-batches).

    num_workers None: data is on the device already, batches are index lookups.
    Otherwise a DataLoader reads the same index lists from (memory-mapped) arrays.
    """
    todo = plan[first_step:]
    steps = [micro_batches(order, a, b, rank, world_size, grad_accum) for a, b in todo]
    sizes = iter([b - a for a, b in todo])
    if num_workers is None:
        for micros in steps:
            yield next(sizes), [(data.x.index_select(0, i.to(device)), data.y.index_select(0, i.to(device)))
                                for i in micros]
        return
    flat = [index for micros in steps for index in micros]
    loader = torch.utils.data.DataLoader(_IndexedArrays(data, flat), batch_size=None,
                                         num_workers=num_workers)
    pending = []
    for x, y in loader:
        pending.append((x.to(device, non_blocking=True), y.to(device, non_blocking=True)))
        if len(pending) == grad_accum:
            yield next(sizes), pending
            pending = []


class _IndexedArrays(torch.utils.data.Dataset):
    """Item i is the micro-batch at index list i, read from arrays (possibly memory-mapped)."""

    def __init__(self, data: TrainData, indices: list[torch.Tensor]):
        self.data, self.indices = data, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        wanted = self.indices[i].numpy()
        ascending = np.argsort(wanted)             # sorted reads are sequential on disk
        restore = np.argsort(ascending)
        x = np.asarray(self.data.x[wanted[ascending]], dtype=np.float32)[restore]
        y = np.asarray(self.data.y[wanted[ascending]])[restore]
        y = y.astype(np.float32 if y.dtype.kind == "f" else np.int64)
        return torch.from_numpy(x), torch.from_numpy(y)
