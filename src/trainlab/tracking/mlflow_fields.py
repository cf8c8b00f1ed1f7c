"""MLflow's own lineage fields, which its UI shows: Source, "Created by", Dataset, system metrics;
and how runs and scores are named there (run names, `final.*`).

The run table's Source, User and Dataset columns read the reserved `mlflow.source.*` and
`mlflow.user` tags and the run's dataset inputs, which `MlflowClient.create_run` fills in
for nobody (only the fluent `mlflow.start_run` does). So each stage run sets them itself:
the commit beside the custom `git.*` tags, and the prepared splits it reads as
`log_input` datasets whose profile holds the manifest's SHA-256 of every file.
"""

from __future__ import annotations

import getpass
import json
import logging
import re
from pathlib import Path
from typing import Mapping

from trainlab import paths
from trainlab.hashing import digest as short_digest
from trainlab.stage_registry import STAGES

# The run's own name, without what the run table adds to a top-level run's (display_name):
# the stage, or a nested run's name. `trainlab rerun` finds a rerun's run by it.
RUN_LABEL_TAG = "trainlab.run_label"


def summary_key(key: str) -> str:
    """`val/acc` -> `final.val.acc`: a score of the finished training (StageRun.log_scores)."""
    return "final." + key.replace("/", ".")


def display_name(label: str, tags: Mapping[str, str], nested: bool) -> str:
    """The run table's name: a nested run's own; a top-level run's stage and the DVC experiment
    (`finetune · shock-wool`), else the id its whole `dvc repro` shares (`finetune · 3f2a9c1b0d4e`,
    filter: tags.trainlab.pipeline_run = '3f2a9c1b0d4e'), so two experiments' runs differ."""
    if nested:
        return label
    return f"{label} · {tags.get('dvc.exp_name') or tags.get('trainlab.pipeline_run', '?')}"


DIGEST_CHARS = 36     # MLflow's datasets.digest column is VARCHAR(36) (PostgreSQL enforces it)
SAMPLING_S = 10.0     # MLflow's default: one psutil sample per 10 s, measured in bench/RESULTS.md


def source_tags(stage: str, commit: str) -> dict[str, str]:
    """mlflow.source.* and mlflow.user for a stage run (the UI's Source and "Created by")."""
    tags = {"mlflow.source.name": f"trainlab {stage}", "mlflow.source.type": "LOCAL",
            "mlflow.user": _user()}
    if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit or ""):
        tags["mlflow.source.git.commit"] = commit
    return tags


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):   # a uid without a passwd entry (some containers)
        return "unknown"


def split_datasets(stage: str, manifest_path: Path = paths.MANIFEST) -> list:
    """The prepared splits `stage` reads, as MLflow DatasetInputs (none when there is no manifest)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return []
    tasks = manifest.get("tasks", {})
    reads = STAGES[stage].reads if stage in STAGES else ()
    if stage == "pretrain" and "source" not in tasks:   # pretext pretraining: the target train pool's inputs
        reads = [("target", "train")]
    inputs = []
    for task, split in reads:
        entry = tasks.get(task, {}).get("splits", {}).get(split)
        if not entry:
            continue
        files = entry.get("files", {})
        sha = {role: f["sha256"] for role, f in sorted(files.items())}
        # One digest for the split's files; the full per-file SHA-256s are in the profile.
        digest = short_digest(" ".join(sha.values()).encode(), DIGEST_CHARS)
        x_file = files.get("x", next(iter(files.values()), {})).get("path", "")
        source = (manifest_path.parent / x_file).resolve()
        profile = {"num_samples": entry.get("num_samples"), "num_classes": tasks[task].get("num_classes"),
                   "sha256": sha, "files": {role: f["path"] for role, f in files.items()}}
        dataset = Dataset(name=f"{manifest.get('dataset', 'data')}-{task}-{split}", digest=digest,
                          source_type="local", source=json.dumps({"uri": str(source)}),
                          schema=json.dumps({"input_shape": manifest.get("input_shape")}),
                          profile=json.dumps(profile))
        inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", split)]))
    return inputs


class SystemMetrics:
    """MLflow's system-metrics thread (CPU, memory, disk, network, GPU) for one run.

    MLflow's monitor publishes a sample only after a full sampling interval, so a stage
    shorter than that would get none; `stop` then publishes the one it has.
    """

    def __init__(self, run_id: str, tracking_uri: str, sampling_s: float = SAMPLING_S):
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        # It logs "Started monitoring" and "Skip logging GPU metrics" at INFO, and a sample it
        # could not write (a full disk, a damaged store) as a warning from its thread: the stage
        # reports such a fault itself, in one line, so the monitor stays quiet on stderr.
        logging.getLogger("mlflow.system_metrics").setLevel(logging.CRITICAL)
        self.monitor = SystemMetricsMonitor(run_id, sampling_interval=sampling_s, tracking_uri=tracking_uri)
        # The samples published, counted here: MLflow keeps the count only in a private attribute.
        # Its thread publishes each through the public publish_metrics, which this wraps.
        self.published = 0
        publish = self.monitor.publish_metrics

        def counted(metrics: dict) -> None:
            publish(metrics)
            self.published += 1

        self.monitor.publish_metrics = counted
        self.monitor.start()

    def stop(self) -> None:
        monitor = self.monitor
        monitor.finish()
        if self.published == 0:   # no interval completed: log what was sampled since start
            try:
                monitor.collect_metrics()
                monitor.publish_metrics(monitor.aggregate_metrics())
                monitor.mlflow_logger.flush()
            except Exception:   # a missing sample must not fail the stage; a store fault is reported
                pass            # by the run's own next write, in one line
