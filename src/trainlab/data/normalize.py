"""Input normalisation of series and images, fitted on training samples and part of the model.

`data.file.normalize` picks one of:

- `per_sample`: every sample z-normalised on its own, channel by channel (the time-series
  literature's z-normalisation: each series' offset and amplitude removed);
- `global`: one mean and standard deviation per channel, over every training sample and
  position (images: per-channel normalisation);
- `per_feature`: one mean and standard deviation per input value (a column, a time step,
  a pixel), the classic standardisation of tables;
- `none`: the values as they are.

`auto` is per_feature for tables and global for series and images (measured on the
development zoo: bench/RESULTS.md, "series normalisation"). Per-time-step statistics fitted
on a few dozen series are noisy estimates and move every series differently; per-sample
z-normalisation throws away each series' level and amplitude, which on multichannel speech
coefficients (japanese_vowels) cost 18 points.

A fitted normalisation is a small JSON-able dict (mode, mean, std) that prepare stores in
the manifest and the served model applies to raw input rows, so serving sees the same
inputs training did.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainlab.errors import DataError

AUTO = {"table": "per_feature", "series": "global", "image": "global"}
# A standard deviation below this is a constant channel or column: divided by 1 instead.
MIN_STD = 1e-8


def resolve_mode(setting: str, kind: str) -> str:
    """The normalisation `setting` stands for on data of `kind` (table, series, image)."""
    return AUTO[kind] if setting == "auto" else setting


def channel_axes(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    """Axes of one sample (batch axis excluded) that a channel's statistics pool over."""
    spatial = 2 if kind == "image" else 1
    return tuple(range(max(0, len(shape) - spatial), len(shape))) if len(shape) > spatial else tuple(range(len(shape)))


def fit_normalization(x: np.ndarray, setting: str, kind: str) -> dict[str, Any]:
    """The normalisation of `setting` fitted on samples `x` (n, *shape): what `normalize` applies."""
    if setting == "imagenet":
        return imagenet_normalization(x, kind)
    mode = resolve_mode(setting, kind)
    spec: dict[str, Any] = {"mode": mode, "kind": kind}
    if mode in ("per_sample", "none"):
        return spec
    # per_feature: one value per input value; global: per channel, over samples and positions
    axes = (0,) if mode == "per_feature" else (0, *(a + 1 for a in channel_axes(x.shape[1:], kind)))
    mean, std = _mean_std(x, axes)
    spec["mean"] = np.asarray(mean, dtype=np.float32).tolist()
    spec["std"] = np.where(std > MIN_STD, std, 1.0).astype(np.float32).tolist()
    return spec


# Samples of stored pixels converted to float64 at a time when fitting statistics on them.
PIXEL_CHUNK = 1024


def _mean_std(x: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of `x` over `axes` (the sample axis among them), without
    the sample axis, in float64. Integer pixels (an image folder's uint8) are summed a chunk of
    samples at a time: a folder of 50,000 images is never copied whole as float64 (8x its
    bytes), and integer sums of pixel values are exact in float64."""
    if x.dtype.kind not in "ui":
        x = np.asarray(x, dtype=np.float64)
        return x.mean(axis=axes, keepdims=True)[0], x.std(axis=axes, keepdims=True)[0]
    total = squares = np.zeros(1)
    for start in range(0, len(x), PIXEL_CHUNK):
        part = x[start:start + PIXEL_CHUNK].astype(np.float64)
        total = total + part.sum(axis=axes, keepdims=True)
        squares = squares + (part * part).sum(axis=axes, keepdims=True)
    count = x.size // total.size
    mean = total / count
    return mean[0], np.sqrt(np.maximum(squares / count - mean * mean, 0.0))[0]


# The per-channel (R, G, B) mean and std of ImageNet's training images, on a 0-1 pixel scale:
# the input convention of torchvision's and timm's published ImageNet weights.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def imagenet_normalization(x: np.ndarray, kind: str) -> dict[str, Any]:
    """ImageNet's mean and std as a fixed `global` normalisation of images `x` (n, [C,] H, W).

    Pixels on a 0-255 scale (an image folder's) get the statistics times 255; values that
    never exceed 1 are taken as 0-1. Grey images (one channel) get the mean of the three
    channels' statistics: the summed first-conv filters of an imported network see a grey
    pixel as the same value on R, G and B."""
    if kind != "image" or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[1] not in (1, 3)):
        raise DataError(f"data.file.normalize: imagenet applies to grey or RGB images, not to {kind} data of "
                        f"shape {list(x.shape[1:])}; accepted here: auto, per_sample, per_feature, global, none")
    scale = 1.0 if float(np.max(x)) <= 1.0 else 255.0
    grey = x.ndim == 3 or x.shape[1] == 1
    shape = () if x.ndim == 3 else (-1, 1, 1)   # [H, W] images have no channel axis to broadcast over

    def per_channel(values: tuple[float, ...]) -> Any:
        picked = [float(np.mean(values))] if grey else list(values)
        return (np.asarray(picked, dtype=np.float32) * np.float32(scale)).reshape(shape).tolist()

    return {"mode": "global", "kind": kind, "preset": "imagenet",
            "mean": per_channel(IMAGENET_MEAN), "std": per_channel(IMAGENET_STD)}


def normalize(x: np.ndarray, spec: dict[str, Any] | None) -> np.ndarray:
    """Samples `x` (n, *shape) normalised as `spec` says (None: unchanged), as float32."""
    x = np.asarray(x, dtype=np.float32)
    mode = (spec or {}).get("mode", "none")
    if mode == "none":
        return x
    if mode == "per_sample":
        axes = tuple(a + 1 for a in channel_axes(x.shape[1:], spec["kind"]))
        mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)
        std = x.std(axis=axes, keepdims=True, dtype=np.float64)
        return ((x - mean) / np.where(std > MIN_STD, std, 1.0)).astype(np.float32)
    mean, std = np.asarray(spec["mean"], dtype=np.float32), np.asarray(spec["std"], dtype=np.float32)
    return ((x - mean) / std).astype(np.float32)


class NormalizedPixels:
    """Stored pixels (uint8, possibly memory-mapped) read as the model's float32 inputs.

    An image folder is prepared as its decoded uint8 pixels, a quarter of float32's bytes, and
    normalised when read (`trainlab.data.prepared.load_split`). Indexing normalises only the
    samples taken, so the DataLoader's workers read each batch from the memory-mapped file and
    no process holds a float32 copy of the split; `np.asarray` gives the whole split."""

    def __init__(self, stored: np.ndarray, spec: dict[str, Any] | None):
        self.stored, self.spec = stored, spec

    @property
    def shape(self) -> tuple[int, ...]:
        return self.stored.shape

    @property
    def ndim(self) -> int:
        return self.stored.ndim

    dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.stored)

    def __getitem__(self, index: Any) -> np.ndarray:
        picked = np.asarray(self.stored[index])
        if picked.ndim < self.stored.ndim:   # one sample: normalise it as a batch of one
            return normalize(picked[None], self.spec)[0]
        return normalize(picked, self.spec)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        values = normalize(np.asarray(self.stored), self.spec)
        return values if dtype is None else values.astype(dtype, copy=False)
