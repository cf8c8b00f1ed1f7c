"""The prepare step: raw pools -> target train/val/test, source train/val, on disk."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainlab.config.schema import DataConfig
from trainlab.data.prepared import write_prepared
from trainlab.data.sources import Arrays, RawData, check_finite, load_raw
from trainlab.data.splits import stratified_split, stratified_subset
from trainlab.errors import DataError

if TYPE_CHECKING:
    from trainlab.params_record import ParamsRecord


def take(arrays: Arrays, index: np.ndarray) -> Arrays:
    """The rows `index` of `arrays`; `arrays` itself when that is every row in order (a label
    budget that keeps all: no copy of a folder's worth of pixels)."""
    if len(index) == len(arrays.y) and np.array_equal(index, np.arange(len(index))):
        return arrays
    return Arrays(arrays.x[index], arrays.y[index])


# The source task of a dataset without a pretraining corpus: inputs only, one dummy class.
UNLABELLED = ["unlabelled"]


def build_splits(raw: RawData, cfg: DataConfig) -> dict[str, dict[str, Arrays]]:
    """Carve validation from train (own seed), apply the label budget, keep test apart."""
    named = [("target train", raw.target_train), ("target test", raw.target_test)]
    for name, arrays in named + ([("source", raw.source)] if raw.source is not None else []):
        if len(arrays.y) == 0:
            raise DataError(f"data: the {name} split is empty")
        check_finite(arrays.x, f"data ({name})")
    pool, val_idx = stratified_split(raw.target_train.y, cfg.val_fraction, cfg.split_seed, "data.val_fraction")
    train_pool = take(raw.target_train, pool)
    budget = stratified_subset(train_pool.y, cfg.train_samples, cfg.train_samples_per_class,
                               cfg.split_seed + 1, "data.train_samples")
    return {
        "target": {"train": take(train_pool, budget), "val": take(raw.target_train, val_idx),
                   "test": raw.target_test},
        "source": _source_splits(raw, train_pool, cfg),
    }


def _source_splits(raw: RawData, train_pool: Arrays, cfg: DataConfig) -> dict[str, Arrays]:
    """The pretraining corpus: the dataset's own, or the target train pool's inputs unlabelled.

    Without a corpus of its own, pretraining may use every input of the target train pool
    (inside the label budget or not) but none of their labels, and nothing of the
    validation or test splits: those must stay unseen for selection and evaluation.
    """
    if raw.source is not None:
        kept, held = stratified_split(raw.source.y, cfg.source.val_fraction, cfg.split_seed + 2,
                                      "data.source.val_fraction")
        return {"train": take(raw.source, kept), "val": take(raw.source, held)}
    inputs = Arrays(train_pool.x, np.zeros(len(train_pool.x), dtype=np.int64))
    order = np.random.default_rng(cfg.split_seed + 2).permutation(len(inputs.y))
    n_val = max(1, int(round(cfg.source.val_fraction * len(order))))
    if n_val >= len(order):
        raise DataError(f"data: the target train pool has {len(order)} sample(s), too few to pretrain on")
    return {"train": take(inputs, np.sort(order[n_val:])), "val": take(inputs, np.sort(order[:n_val]))}


def standardize_target(splits: dict[str, Arrays]) -> tuple[dict[str, Arrays], dict[str, float]]:
    """A regression target in units of its train split's standard deviation, around its mean.

    Losses and learning rates then mean the same whatever the target's unit (a price in
    dollars, a weight in grams); every output is turned back with `target_scale`.
    """
    y = np.asarray(splits["train"].y, dtype=np.float64)
    mean, std = float(y.mean()), float(y.std())
    std = std if std > 0 else 1.0
    scaled = {name: Arrays(a.x, ((np.asarray(a.y, dtype=np.float64) - mean) / std).astype(np.float32))
              for name, a in splits.items()}
    return scaled, {"mean": mean, "std": std}


def prepare(cfg: DataConfig, out: Path, params_hash: str, ran_with: ParamsRecord | None = None) -> dict:
    """Build and write the prepared dataset; returns the manifest.

    `ran_with`: the stage's params as read (trainlab.params_record), checked against
    params.yaml before anything is written and kept in the manifest."""
    raw = load_raw(cfg)
    splits = build_splits(raw, cfg)
    labelled = raw.source is not None
    classes = {"target": raw.target_classes, "source": raw.source_classes if labelled else UNLABELLED}
    inputs = {"normalization": raw.normalization, "columns": raw.raw_columns, "example": raw.example}
    if raw.image_resize:   # what the served model does to an image file (trainlab.data.served_inputs)
        inputs["image"] = {"resize": raw.image_resize}
    meta = {"dataset": cfg.name, "params_hash": params_hash, "source_labelled": labelled, "kind": raw.kind,
            "notes": list(raw.notes), "inputs": inputs}
    tasks = {"target": {"task": raw.task}, "source": {"task": "classification"}}
    if raw.task == "regression":
        splits["target"], tasks["target"]["target_scale"] = standardize_target(splits["target"])
        tasks["target"]["label"] = cfg.file.label
    if ran_with is not None:
        ran_with.check_unchanged()
        meta["params"] = ran_with.values
    return write_prepared(out, splits, classes, raw.input_shape, meta, tasks, raw.preprocessor)


def summarize(manifest: dict) -> dict[str, int]:
    """Split sizes and class counts as flat metrics (`dvc metrics show`, MLflow)."""
    metrics = {}
    for task, entry in manifest["tasks"].items():
        if "class_counts" not in next(iter(entry["splits"].values())):   # a regression target: sizes only
            metrics.update({f"{task}/{split}/samples": info["num_samples"] for split, info in entry["splits"].items()})
            continue
        metrics[f"{task}/num_classes"] = entry["num_classes"]
        for split, info in entry["splits"].items():
            metrics[f"{task}/{split}/samples"] = info["num_samples"]
            counts = list(info["class_counts"].values())
            metrics[f"{task}/{split}/min_class_count"] = min(counts)
    return metrics
