"""Augmentation of training batches (issue 26, item 2): a pure function of (seed, epoch, step),
so a killed-and-resumed run with it on ends bit-identical to an uninterrupted one; off, the
training is exactly what it was without it; a bad setting is one line naming its key."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from trainlab.config import validate
from trainlab.config.schema import AugmentationConfig, ModelConfig
from trainlab.engine import Checkpointing, TrainData, fit
from trainlab.engine.augment import Augment, pixels, resolve_augment
from trainlab.errors import ParamsError
from trainlab.models import build_model
from trainlab.testing import ROOT, set_dotted

from helpers.engine import (CLASSES, LENGTH, Recorder, StopAt, assert_same_weights, signal_data, tiny_model,
                            train_spec, trainer_cfg, weights)

NONE = AugmentationConfig(crop=0.0, flip=False, scale=0.0, jitter=0.0, shift=0.0)
IMAGE = (4, 8)                     # signal_data's 32 values as a 4x8 image


def ramp(n: int, shape: tuple[int, ...], axis: int = -1) -> torch.Tensor:
    """n samples whose value is the position along `axis` (plus the sample's number x 100)."""
    positions = torch.arange(shape[axis], dtype=torch.float32)
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return (positions.reshape(view).expand(shape) + 100 * torch.arange(n).reshape(n, *[1] * len(shape))).contiguous()


def augmented(aug: Augment, x: torch.Tensor, step: int = 3, seed: int = 0, epoch: int = 1) -> torch.Tensor:
    return aug.step([(x, torch.zeros(len(x), dtype=torch.long))], seed, epoch, step, len(x), 0, 1)[0][0]


# ------------------------------------------------------------------------- the function
@pytest.mark.parametrize(("kind", "shape"), [("series", (40,)), ("series", (3, 40)), ("image", (8, 8)),
                                             ("image", (3, 16, 12))])
def test_a_pure_function_of_seed_epoch_and_step(kind: str, shape: tuple[int, ...]) -> None:
    aug = Augment(kind, AugmentationConfig(flip=True))
    x = torch.randn(16, *shape, generator=torch.Generator().manual_seed(0))
    before = torch.random.get_rng_state()
    out = augmented(aug, x)
    assert torch.equal(torch.random.get_rng_state(), before)   # the global RNG (dropout's) untouched
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, augmented(aug, x.clone()))        # same (seed, epoch, step): same batch
    assert not torch.equal(out, x)
    for other in ({"step": 4}, {"seed": 1}, {"epoch": 2}):
        assert not torch.equal(out, augmented(aug, x, **{"step": 3, "seed": 0, "epoch": 1, **other}))


@pytest.mark.parametrize("kind", ["series", "image"])
def test_micro_batches_and_ranks_see_the_augmented_global_batch(kind: str) -> None:
    """2 micro-batches, or 2 ranks each with its interleaved share, get exactly the rows of the
    whole batch augmented at once: grad_accum and devices stay the same maths."""
    aug = Augment(kind, AugmentationConfig(flip=True))
    x, y = torch.randn(10, 8, 8), torch.arange(10)
    whole = aug.step([(x, y)], 0, 0, 5, 10, 0, 1)[0][0]
    split = aug.step([(x[:5], y[:5]), (x[5:], y[5:])], 0, 0, 5, 10, 0, 1)
    assert torch.equal(torch.cat([m[0] for m in split]), whole)
    for rank in (0, 1):
        mine = aug.step([(x[rank::2], y[rank::2])], 0, 0, 5, 10, rank, 2)
        assert torch.equal(mine[0][0], whole[rank::2]) and torch.equal(mine[0][1], y[rank::2])


def test_images_shift_within_the_crop_and_never_mirror_with_flip_off() -> None:
    n, height, width = 64, 16, 24
    aug = Augment("image", AugmentationConfig(crop=0.125, flip=False))
    cols = augmented(aug, ramp(n, (height, width), axis=-1)) - 100 * torch.arange(n)[:, None, None]
    rows = augmented(aug, ramp(n, (height, width), axis=-2)) - 100 * torch.arange(n)[:, None, None]
    # flip off: positions only ever increase left to right (a mirror would reverse them)
    assert (cols.diff(dim=-1) >= 0).all() and (rows.diff(dim=-2) >= 0).all()
    # each sample moved by one offset within +-crop x side (edges repeated past it)
    for middle, size in ((cols[:, 0, width // 2], width), (rows[:, height // 2, 0], height)):
        offset = size // 2 - middle
        assert offset.abs().max() <= pixels(0.125, size) == round(0.125 * size)
        assert len(offset.unique()) > 1
    # with flip on, about half are mirrored
    flipped = augmented(Augment("image", AugmentationConfig(crop=0.0, flip=True)), ramp(n, (height, width)))
    mirrored = (flipped.diff(dim=-1) < 0).all(dim=-1).all(dim=-1)
    assert 0.25 * n < mirrored.sum() < 0.75 * n


def test_series_scale_jitter_and_shift_stay_within_their_settings() -> None:
    n, length = 256, 50
    x = torch.ones(n, 2, length)
    scaled = augmented(Augment("series", AugmentationConfig(scale=0.2, jitter=0.0, shift=0.0)), x)
    factors = scaled[:, 0, 0]
    assert (scaled == factors[:, None, None]).all()   # one factor per series, every channel and step
    assert factors.min() >= 0.8 and factors.max() <= 1.2 and factors.std() > 0.05
    noisy = augmented(Augment("series", AugmentationConfig(scale=0.0, jitter=0.1, shift=0.0)), x)
    assert abs((noisy - x).std().item() - 0.1) < 0.01
    shifted = augmented(Augment("series", AugmentationConfig(scale=0.0, jitter=0.0, shift=0.1)),
                        ramp(n, (2, length)) - 100 * torch.arange(n)[:, None, None])
    assert torch.equal(shifted[:, 0], shifted[:, 1])  # channels move together
    offsets = length // 2 - shifted[:, 0, length // 2]
    assert offsets.abs().max() == pixels(0.1, length) == 5
    # everything at zero changes nothing
    assert torch.equal(augmented(Augment("series", NONE), x), x)
    assert torch.equal(augmented(Augment("image", NONE), x), x)


# ---------------------------------------------------------------------------- in fit()
TRAIN, VAL = signal_data(128, 0), signal_data(32, 1)    # 4 steps per epoch at batch 32
EPOCHS, EVERY = 3, 3
SPEC = train_spec(EPOCHS, optimizer={"name": "adamw", "lr": 0.01, "weight_decay": 0.01},
                  schedule={"name": "cosine", "warmup_epochs": 1})


def as_image(data: TrainData) -> TrainData:
    return TrainData(np.asarray(data.x).reshape(len(data.x), *IMAGE), data.y)


def model_for(kind: str, init_seed: int = 0) -> torch.nn.Module:
    if kind == "image":
        torch.manual_seed(init_seed)
        cfg = ModelConfig.model_validate({"arch": "cnn2d", "width": 4, "depth": 1, "kernel_size": 3,
                                          "dropout": 0.2, "batchnorm": True})
        return build_model(cfg, IMAGE, CLASSES)
    return tiny_model("cnn1d", seed=init_seed, batchnorm=True, dropout=0.2)


def run(kind: str | None, *hooks, model=None, checkpointing=None, data_kind: str | None = None, **trainer):
    """A fit on the signal task (as images for `data_kind` image); returns (weights, history)."""
    data_kind = data_kind or kind
    train, val = (as_image(TRAIN), as_image(VAL)) if data_kind == "image" else (TRAIN, VAL)
    model = model or model_for(data_kind or "series")
    result = fit(model, train, val, SPEC, trainer_cfg(**trainer), seed=0, hooks=list(hooks),
                 checkpointing=checkpointing, kind=kind)
    timing = ("epoch/time_s", "epoch/samples_per_s")
    return weights(model), [{k: v for k, v in row.items() if k not in timing} for row in result.history]


def test_augment_off_trains_exactly_as_without_it() -> None:
    """`false` (and `auto` on a table or an unknown kind) draws nothing: the weights are those of
    fit() called without a kind, as before augmentation existed."""
    reference, history = run(None)
    for kind, setting in (("series", False), ("table", "auto"), ("image", False)):
        got, got_history = run(kind, augment=setting, data_kind="series")
        assert_same_weights(got, reference)
        assert got_history == history
    on, _ = run("series", augment=True)
    assert any(not torch.equal(on[k], reference[k]) for k in on)


@pytest.mark.parametrize("kind", ["series", "image"])
def test_killed_and_resumed_with_augmentation_is_bit_identical(kind: str, tmp_path: Path) -> None:
    settings = {"augment": True, "augmentation": {"flip": True}, "checkpoint_every_steps": EVERY}
    ref_weights, ref_history = run(kind, StopAt(), **settings)
    path = tmp_path / "resume.pt"
    # step checkpoints at 3, 6; killed after step 7 (epoch 1, its 4th and last step)
    with pytest.raises(KeyboardInterrupt):
        run(kind, StopAt(step=7), Recorder(), checkpointing=Checkpointing(path, "fp", EVERY), **settings)
    counters = torch.load(path, map_location="cpu", weights_only=True)["counters"]
    assert (counters["epoch"], counters["step"], counters["step_in_epoch"]) == (1, 6, 2)
    # another initialisation: what the rerun ends with must come from the checkpoint
    checkpointing = Checkpointing(path, "fp", EVERY)
    got_weights, got_history = run(kind, StopAt(), model=model_for(kind, init_seed=1),
                                   checkpointing=checkpointing, **settings)
    assert checkpointing.resumed_from == 6
    assert_same_weights(got_weights, ref_weights)
    assert got_history == ref_history


def test_the_dataloader_path_is_augmented_alike() -> None:
    memory, _ = run("series", augment=True)
    loader, _ = run("series", augment=True, loader="dataloader", num_workers=0)
    assert_same_weights(loader, memory)


# ------------------------------------------------------------------------------ params
REAL = yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("trainer.augment", "sometimes", "params.yaml: trainer.augment: expected auto, true or false, got 'sometimes'"),
    ("trainer.augment", 1, "params.yaml: trainer.augment: expected auto, true or false, got 1"),
    ("trainer.augmentation.crop", 0.9, "params.yaml: trainer.augmentation.crop: must be <= 0.5, got 0.9"),
    ("trainer.augmentation.flip", "sometimes", "params.yaml: trainer.augmentation.flip:"),
    ("trainer.augmentation.zoom", 0.1, "params.yaml: trainer.augmentation.zoom: unknown key; accepted keys here: "
                                       "crop, flip, scale, jitter, shift"),
])
def test_a_bad_setting_is_one_line_naming_its_key(key: str, value, expected: str) -> None:
    raw = copy.deepcopy(REAL)
    set_dotted(raw, key, value)
    with pytest.raises(ParamsError) as info:
        validate(raw, source="params.yaml")
    assert "\n" not in str(info.value) and str(info.value).startswith(expected), str(info.value)


def test_on_for_a_table_is_refused_by_name() -> None:
    with pytest.raises(ParamsError, match=r"^trainer\.augment: true augments series and images, but this data is a table"):
        resolve_augment(trainer_cfg(augment=True), "table")
    assert resolve_augment(trainer_cfg(augment="auto"), "table") is None
    assert resolve_augment(trainer_cfg(augment=True), "image") == Augment("image", AugmentationConfig())


def test_the_setting_changes_the_maths_fingerprint() -> None:
    """A resume checkpoint or a search study made without augmentation is not reused with it."""
    assert trainer_cfg(augment=True).maths() != trainer_cfg(augment=False).maths()
    assert "augment" in trainer_cfg().maths() and "augmentation" in trainer_cfg().maths()
    assert LENGTH == 32   # IMAGE reshapes signal_data's samples
