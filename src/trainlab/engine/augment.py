"""Augmentation of training batches: random crops and flips of images, random scaling,
jitter and shifts of series.

Every random number is drawn from a generator of its own, seeded from (seed, epoch, step),
never from the global RNG: a resumed run replays the same augmentations at every step,
dropout's masks are untouched, and `augment: false` draws nothing at all. The numbers are
drawn for the whole global batch, one row per sample position, and each rank's
micro-batches take their rows: 2 ranks or 2 micro-batches see exactly the augmented
batch that 1 rank with 1 micro-batch sees (`trainer.grad_accum` stays "the same maths").
Only training batches pass through here; validation, test and predictions never do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trainlab.config.schema import AugmentationConfig, TrainerConfig
from trainlab.engine.batches import micro_batches
from trainlab.errors import ParamsError

# `augment: auto` by the data's kind (prepare decides it). Tables have no augmentation: a
# column's values carry no neighbourhood to shift or crop within. Series and images: on
# only where every zoo set of the kind kept its results with it (bench/RESULTS.md section 17).
AUTO_AUGMENT = {"table": False, "series": False, "image": False}
KINDS = ("series", "image")   # the kinds `augment: true` has augmentations for
SALT = 0x6175_676D             # "augm": keeps these streams apart from any other seeded from the same numbers

Micro = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Augment:
    """The augmentation of one fit: what it changes (`cfg`) on data of `kind` (series or image)."""

    kind: str
    cfg: AugmentationConfig

    def step(self, micro: Micro, seed: int, epoch: int, step: int, global_size: int, rank: int,
             world_size: int) -> Micro:
        """This rank's micro-batches of global step `step`, augmented; the targets unchanged."""
        gen = torch.Generator().manual_seed(step_seed(seed, epoch, step))
        sample_shape = tuple(micro[0][0].shape[1:])
        draws = (self._image_draws if self.kind == "image" else self._series_draws)(gen, global_size, sample_shape)
        positions = micro_batches(torch.arange(global_size), 0, global_size, rank, world_size, len(micro))
        out = []
        for (x, y), rows in zip(micro, positions):
            mine = {name: value[rows].to(x.device) for name, value in draws.items()}
            out.append((self._image(x, mine) if self.kind == "image" else self._series(x, mine), y))
        return out

    def _image_draws(self, gen: torch.Generator, n: int, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        height, width = shape[-2:]
        rows, cols = pixels(self.cfg.crop, height), pixels(self.cfg.crop, width)
        draws = {"dy": torch.randint(-rows, rows + 1, (n,), generator=gen),
                 "dx": torch.randint(-cols, cols + 1, (n,), generator=gen)}
        if self.cfg.flip:
            draws["flip"] = torch.rand(n, generator=gen) < 0.5
        return draws

    def _series_draws(self, gen: torch.Generator, n: int, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        steps = pixels(self.cfg.shift, shape[-1])
        return {"scale": 1.0 + self.cfg.scale * (2.0 * torch.rand(n, generator=gen) - 1.0),
                "shift": torch.randint(-steps, steps + 1, (n,), generator=gen),
                "noise": self.cfg.jitter * torch.randn((n, *shape), generator=gen)}

    @staticmethod
    def _image(x: torch.Tensor, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """(n, [channels,] height, width): shifted by (dy, dx) with edges repeated, maybe mirrored."""
        n, height, width = len(x), x.shape[-2], x.shape[-1]
        rows = shifted_index(height, draws["dy"])                       # (n, height)
        cols = shifted_index(width, draws["dx"])                        # (n, width)
        if "flip" in draws:
            cols = torch.where(draws["flip"][:, None], cols.flip(1), cols)
        # one gather over the flattened pixels (8x faster than indexing rows and columns apart)
        flat = x.reshape(n, -1, height * width)
        source = (rows[:, :, None] * width + cols[:, None, :]).reshape(n, 1, -1).expand(-1, flat.shape[1], -1)
        return torch.gather(flat, 2, source).reshape(x.shape)

    @staticmethod
    def _series(x: torch.Tensor, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """(n, [channels,] length): scaled, jittered, shifted in time with edges repeated."""
        n, length = len(x), x.shape[-1]
        index = shifted_index(length, draws["shift"])                   # (n, length)
        flat = x.reshape(n, -1, length)
        moved = torch.gather(flat, 2, index[:, None, :].expand(-1, flat.shape[1], -1)).reshape(x.shape)
        scale = draws["scale"].to(x.dtype).reshape(n, *([1] * (x.dim() - 1)))
        return moved * scale + draws["noise"].to(x.dtype)


def step_seed(seed: int, epoch: int, step: int) -> int:
    """A well-mixed 64-bit seed for one step's augmentation (a pure function of its arguments)."""
    return int(np.random.SeedSequence([SALT, seed, epoch, step]).generate_state(1, np.uint64)[0])


def pixels(share: float, size: int) -> int:
    """The largest shift for `share` of `size`: at least one when the share is not zero."""
    return 0 if share == 0 else min(size - 1, max(1, round(share * size)))


def shifted_index(size: int, shift: torch.Tensor) -> torch.Tensor:
    """(n, size) source positions of a shift by `shift` (n,), clamped: the edge value repeats."""
    return (torch.arange(size, device=shift.device)[None, :] - shift[:, None]).clamp_(0, size - 1)


def resolve_augment(trainer: TrainerConfig, kind: str | None) -> Augment | None:
    """The augmentation `trainer.augment` asks for on data of `kind` (None: the kind is unknown,
    so `auto` is off); None when there is none."""
    if trainer.augment is False or (trainer.augment == "auto" and not AUTO_AUGMENT.get(kind or "", False)):
        return None
    if kind not in KINDS:
        raise ParamsError(f"trainer.augment: true augments series and images, but this data is "
                          f"{'a table' if kind == 'table' else 'of unknown kind'}; use auto or false")
    return Augment(kind, trainer.augmentation)
