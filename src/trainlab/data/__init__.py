"""Datasets: built-in (MNIST-1D, sklearn digits) and user files, splits, prepared data on disk."""

from trainlab.data.prepared import TaskInfo, load_split, read_manifest, task_info
from trainlab.data.sources import Arrays

__all__ = ["Arrays", "TaskInfo", "load_split", "read_manifest", "task_info"]
