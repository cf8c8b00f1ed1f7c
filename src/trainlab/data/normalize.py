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
    mode = resolve_mode(setting, kind)
    spec: dict[str, Any] = {"mode": mode, "kind": kind}
    if mode in ("per_sample", "none"):
        return spec
    x = np.asarray(x, dtype=np.float64)
    if mode == "per_feature":
        mean, std = x.mean(axis=0), x.std(axis=0)
    else:   # global: per channel, pooled over samples and positions
        axes = (0, *(a + 1 for a in channel_axes(x.shape[1:], kind)))
        mean, std = x.mean(axis=axes, keepdims=True)[0], x.std(axis=axes, keepdims=True)[0]
    spec["mean"] = np.asarray(mean, dtype=np.float32).tolist()
    spec["std"] = np.where(std > MIN_STD, std, 1.0).astype(np.float32).tolist()
    return spec


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
