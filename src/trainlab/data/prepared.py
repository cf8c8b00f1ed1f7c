"""The prepared dataset on disk: one .npy per array plus a manifest of sizes, classes and hashes.

Arrays are plain .npy (never pickles) so they can be memory-mapped for data that does
not fit in memory. Every read checks the file's SHA-256 against the manifest, so a
corrupted or edited file is named, never silently trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainlab.data.sources import Arrays
from trainlab.errors import DataError
from trainlab.io import staging_dir, temp_name

MANIFEST_NAME = "manifest.json"
SPLITS = {"source": ("train", "val"), "target": ("train", "val", "test")}


@dataclass(frozen=True)
class TaskInfo:
    num_classes: int
    class_names: list[str]
    input_shape: tuple[int, ...]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_prepared(root: Path, splits: dict[str, dict[str, Arrays]], classes: dict[str, list[str]],
                   input_shape: tuple[int, ...], meta: dict) -> dict:
    """Write every split and the manifest into a temporary directory, then swap it into place."""
    root = Path(root)
    with staging_dir(root) as staging:
        tasks = {}
        for task, task_splits in splits.items():
            (staging / task).mkdir()
            entries = {}
            for split, arrays in task_splits.items():
                entries[split] = _write_split(staging, task, split, arrays, classes[task])
            tasks[task] = {"num_classes": len(classes[task]), "class_names": classes[task],
                           "splits": entries}
        manifest = {**meta, "input_shape": list(input_shape), "tasks": tasks}
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _swap_into_place(staging, root)
    return manifest


def _write_split(staging: Path, task: str, split: str, arrays: Arrays, class_names: list[str]) -> dict:
    files = {}
    for name, array in (("x", arrays.x), ("y", arrays.y)):
        relative = f"{task}/{split}_{name}.npy"
        np.save(staging / relative, np.ascontiguousarray(array), allow_pickle=False)
        files[name] = {"path": relative, "sha256": sha256_file(staging / relative)}
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


def task_info(root: Path, task: str) -> TaskInfo:
    manifest = read_manifest(root)
    entry = manifest["tasks"][task]
    return TaskInfo(entry["num_classes"], entry["class_names"], tuple(manifest["input_shape"]))


def load_split(root: Path, task: str, split: str, mmap: bool = False) -> Arrays:
    """Load one split after checking each file's hash against the manifest."""
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
    return Arrays(arrays["x"], arrays["y"])
