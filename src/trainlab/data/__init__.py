"""Datasets: built-in (MNIST-1D, sklearn digits) and user files, splits, prepared data on disk."""

from trainlab.data.prepared import TaskInfo, data_hashes, load_split, read_manifest, task_info
from trainlab.data.sources import Arrays

__all__ = ["Arrays", "TaskInfo", "data_hashes", "load_split", "read_manifest", "task_info"]
