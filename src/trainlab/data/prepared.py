"""The prepared dataset on disk: one .npy per array plus a manifest of sizes, classes and hashes.

Arrays are plain .npy (never pickles) so they can be memory-mapped for data that does
not fit in memory; an image folder's inputs stay uint8 pixels on disk (a quarter of
float32's bytes) and are normalised as they are read. Every read checks the file's SHA-256 against the manifest, so a
corrupted or edited file is named, never silently trained on.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainlab.data.normalize import NormalizedPixels
from trainlab.data.sources import Arrays
from trainlab.errors import DataError
from trainlab.hashing import sha256_file
from trainlab.io import staging_dir, temp_name

MANIFEST_NAME = "manifest.json"
PREPROCESSOR_NAME = "preprocessor.skops"   # paths.PREPROCESSOR
# An image folder's x: its uint8 pixels, normalised by the manifest's inputs.normalization when read.
PIXELS = "uint8 pixels, normalised when read"
SPLITS = {"source": ("train", "val"), "target": ("train", "val", "test")}


@dataclass(frozen=True)
class TaskInfo:
    num_classes: int                  # outputs of the model's head: 1 for a regression target
    class_names: list[str]            # regression: the label's name
    input_shape: tuple[int, ...]
    kind: str = "series"              # table | series | image (what model.arch auto builds)
    task: str = "classification"      # or regression
    target_scale: tuple[float, float] | None = None   # regression: (mean, std) the target was standardised by

    @property
    def regression(self) -> bool:
        return self.task == "regression"


def write_prepared(root: Path, splits: dict[str, dict[str, Arrays]], classes: dict[str, list[str]],
                   input_shape: tuple[int, ...], meta: dict, task_meta: dict[str, dict] | None = None,
                   preprocessor: Any = None) -> dict:
    """Write every split and the manifest into a temporary directory, then swap it into place.

    `task_meta` adds to each task's entry (its task kind, a regression target's scale);
    `preprocessor` is a table's fitted ColumnTransformer, saved beside the arrays."""
    root = Path(root)
    with staging_dir(root) as staging:
        tasks = {}
        for task, task_splits in splits.items():
            (staging / task).mkdir()
            entries = {}
            for split, arrays in task_splits.items():
                entries[split] = _write_split(staging, task, split, arrays, classes[task])
            tasks[task] = {"num_classes": len(classes[task]) or 1, "class_names": classes[task],
                           "splits": entries, **(task_meta or {}).get(task, {})}
        manifest = {**meta, "input_shape": list(input_shape), "tasks": tasks}
        if preprocessor is not None:
            from trainlab.data.tables import save_preprocessor

            save_preprocessor(preprocessor, staging / PREPROCESSOR_NAME)
            manifest["inputs"] = {**manifest.get("inputs", {}), "preprocessor": {
                "path": PREPROCESSOR_NAME, "sha256": sha256_file(staging / PREPROCESSOR_NAME)}}
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _swap_into_place(staging, root)
    return manifest


def _write_split(staging: Path, task: str, split: str, arrays: Arrays, class_names: list[str]) -> dict:
    files = {}
    for name, array in (("x", arrays.x), ("y", arrays.y)):
        relative = f"{task}/{split}_{name}.npy"
        np.save(staging / relative, np.ascontiguousarray(array), allow_pickle=False)
        files[name] = {"path": relative, "sha256": sha256_file(staging / relative)}
    if arrays.x.dtype == np.uint8:
        files["x"]["stored"] = PIXELS
    if not class_names:   # a regression target (standardised): its range instead of class counts
        y = np.asarray(arrays.y, dtype=np.float64)
        return {"num_samples": int(len(y)), "files": files,
                "target": {"mean": float(y.mean()), "std": float(y.std()), "min": float(y.min()),
                           "max": float(y.max())}}
    counts = np.bincount(arrays.y, minlength=len(class_names))
    return {"num_samples": int(len(arrays.y)), "files": files,
            "class_counts": {class_names[i]: int(c) for i, c in enumerate(counts)}}


def _swap_into_place(staging: Path, root: Path) -> None:
    # rename() is atomic; the old tree is moved aside first and removed only afterwards,
    # so a crash leaves either the old or the new data, never a mix.
    old = None
    if root.exists():
        old = temp_name(root)   # a stale one (writer killed here) is removed by the next write
        os.replace(root, old)
    os.replace(staging, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_manifest(root: Path) -> dict:
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"{path}: not found; run `dvc repro prepare` (or `trainlab prepare`) first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: corrupt manifest ({err.msg} at line {err.lineno})") from None


def data_hashes(root: Path) -> dict[str, str]:
    """Content hash of every prepared file, from the manifest (tags and fingerprints)."""
    manifest = read_manifest(root)
    return {f"{task}/{split}/{name}": info["sha256"]
            for task, entry in manifest["tasks"].items()
            for split, split_entry in entry["splits"].items()
            for name, info in split_entry["files"].items()}


def task_info(root: Path, task: str) -> TaskInfo:
    manifest = read_manifest(root)
    entry = manifest["tasks"][task]
    scale = entry.get("target_scale")
    names = entry["class_names"] or [entry.get("label", "prediction")]
    return TaskInfo(entry["num_classes"], names, tuple(manifest["input_shape"]), manifest.get("kind", "series"),
                    entry.get("task", "classification"), (scale["mean"], scale["std"]) if scale else None)


def load_preprocessor(root: Path) -> Any:
    """A table's fitted preprocessing (None for series and images), checked against the manifest."""
    info = read_manifest(root).get("inputs", {}).get("preprocessor")
    if info is None:
        return None
    path = Path(root) / info["path"]
    if not path.is_file() or sha256_file(path) != info["sha256"]:
        raise DataError(f"{path}: missing or does not match {MANIFEST_NAME}; rerun `dvc repro prepare`")
    from trainlab.data.tables import load_preprocessor as load

    return load(path)


def load_split(root: Path, task: str, split: str, mmap: bool = False) -> Arrays:
    """Load one split after checking each file's hash against the manifest.

    `mmap`: the arrays memory-mapped (an image folder's pixels as a NormalizedPixels view
    over the mapped file); otherwise in memory, pixels normalised to float32."""
    root = Path(root)
    manifest = read_manifest(root)
    try:
        entry = manifest["tasks"][task]["splits"][split]
    except KeyError:
        raise DataError(f"{root / MANIFEST_NAME}: has no {task}/{split} split") from None
    arrays = {}
    for name in ("x", "y"):
        info = entry["files"][name]
        path = root / info["path"]
        if not path.is_file():
            raise DataError(f"{path}: missing; rerun `dvc repro prepare`")
        if sha256_file(path) != info["sha256"]:
            raise DataError(f"{path}: content hash does not match {MANIFEST_NAME} "
                            f"(file corrupted or edited); rerun `dvc repro prepare`")
        try:
            arrays[name] = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except ValueError as err:
            raise DataError(f"{path}: unreadable array ({err})") from None
    if entry["files"]["x"].get("stored") == PIXELS:
        spec = manifest.get("inputs", {}).get("normalization")
        pixels = NormalizedPixels(arrays["x"], spec)
        arrays["x"] = pixels if mmap else np.asarray(pixels)
    return Arrays(arrays["x"], arrays["y"])
