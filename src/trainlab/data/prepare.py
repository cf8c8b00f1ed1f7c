"""The prepare step: raw pools -> target train/val/test, source train/val, on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainlab.config.schema import DataConfig
from trainlab.data.prepared import write_prepared
from trainlab.data.sources import Arrays, RawData, check_finite, load_raw
from trainlab.data.splits import stratified_split, stratified_subset
from trainlab.errors import DataError


def take(arrays: Arrays, index: np.ndarray) -> Arrays:
    return Arrays(arrays.x[index], arrays.y[index])


def build_splits(raw: RawData, cfg: DataConfig) -> dict[str, dict[str, Arrays]]:
    """Carve validation from train (own seed), apply the label budget, keep test apart."""
    for name, arrays in (("target train", raw.target_train), ("target test", raw.target_test),
                         ("source", raw.source)):
        if len(arrays.y) == 0:
            raise DataError(f"data: the {name} split is empty")
        check_finite(arrays.x, f"data ({name})")
    pool, val_idx = stratified_split(raw.target_train.y, cfg.val_fraction, cfg.split_seed, "data.val_fraction")
    train_pool = take(raw.target_train, pool)
    budget = stratified_subset(train_pool.y, cfg.train_samples, cfg.train_samples_per_class,
                               cfg.split_seed + 1, "data.train_samples")
    source_train, source_val = stratified_split(raw.source.y, cfg.source.val_fraction,
                                                cfg.split_seed + 2, "data.source.val_fraction")
    return {
        "target": {"train": take(train_pool, budget), "val": take(raw.target_train, val_idx),
                   "test": raw.target_test},
        "source": {"train": take(raw.source, source_train), "val": take(raw.source, source_val)},
    }


def prepare(cfg: DataConfig, out: Path, params_hash: str) -> dict:
    """Build and write the prepared dataset; returns the manifest."""
    raw = load_raw(cfg)
    splits = build_splits(raw, cfg)
    classes = {"target": raw.target_classes, "source": raw.source_classes}
    meta = {"dataset": cfg.name, "params_hash": params_hash}
    return write_prepared(out, splits, classes, raw.input_shape, meta)


def summarize(manifest: dict) -> dict[str, int]:
    """Split sizes and class counts as flat metrics (`dvc metrics show`, MLflow)."""
    metrics = {}
    for task, entry in manifest["tasks"].items():
        metrics[f"{task}/num_classes"] = entry["num_classes"]
        for split, info in entry["splits"].items():
            metrics[f"{task}/{split}/samples"] = info["num_samples"]
            counts = list(info["class_counts"].values())
            metrics[f"{task}/{split}/min_class_count"] = min(counts)
    return metrics
