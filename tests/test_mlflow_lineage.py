"""MLflow's own lineage fields, read back from the real sqlite store: Source and "Created by"
tags, the prepared splits as dataset inputs (digest and source from the manifest), system
metrics, and the one epoch axis that `trainlab diagnose` reads back."""

from __future__ import annotations

import getpass
import hashlib
import json
from pathlib import Path

from mlflow.tracking import MlflowClient

from trainlab.testing import run, trainlab
from trainlab.config import load_params
from trainlab.tracking import StageRun
from trainlab.tracking.epoch_axis import from_mlflow
from trainlab.tracking.history import fetch_curves


def pretrain_run(project: Path):
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("trainlab")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`trainlab.stage` = 'pretrain'")
    assert len(runs) == 1
    return client, runs[0]


def test_source_and_user_are_mlflows_own_tags(prepared_project: Path) -> None:
    tags = pretrain_run(prepared_project)[1].data.tags
    head = run(["git", "rev-parse", "HEAD"], prepared_project).stdout.strip()
    assert tags["mlflow.source.git.commit"] == head
    assert tags["mlflow.source.name"] == "trainlab pretrain"
    assert tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.user"] == getpass.getuser()


def test_the_splits_a_stage_reads_are_dataset_inputs(prepared_project: Path) -> None:
    client, found = pretrain_run(prepared_project)
    inputs = client.get_run(found.info.run_id).inputs.dataset_inputs
    prepared = prepared_project / "data/prepared"
    by_split = {i.dataset.name: i for i in inputs}
    assert sorted(by_split) == ["mnist1d-source-train", "mnist1d-source-val"]   # pretrain reads the source corpus
    for split in ("train", "val"):
        dataset = by_split[f"mnist1d-source-{split}"]
        assert {t.key: t.value for t in dataset.tags} == {"mlflow.data.context": split}
        # The reference: the files on disk, hashed here (not the manifest the code read).
        x, y = prepared / f"source/{split}_x.npy", prepared / f"source/{split}_y.npy"
        sha = {"x": hashlib.sha256(x.read_bytes()).hexdigest(), "y": hashlib.sha256(y.read_bytes()).hexdigest()}
        profile = json.loads(dataset.dataset.profile)
        assert profile["sha256"] == sha
        assert profile["num_samples"] == len(__import__("numpy").load(y))
        assert dataset.dataset.digest == hashlib.sha256(f"{sha['x']} {sha['y']}".encode()).hexdigest()[:36]
        assert json.loads(dataset.dataset.source) == {"uri": str(x.resolve())}


def test_system_metrics_are_logged_and_can_be_switched_off(prepared_project: Path, tmp_path: Path) -> None:
    client, found = pretrain_run(prepared_project)
    system = [key for key in found.data.metrics if key.startswith("system/")]
    assert "system/cpu_utilization_percentage" in system and "system/system_memory_usage_megabytes" in system

    # Off: a real stage run in this process (a subprocess stage would cost ~30 s on a busy machine).
    params = load_params(prepared_project / "params.yaml")
    params = params.model_copy(update={"tracking": params.tracking.model_copy(
        update={"system_metrics": False, "uri": f"sqlite:///{tmp_path / 'off.db'}"})})
    with StageRun("prepare", params) as off:
        pass
    logged = MlflowClient(params.tracking.uri).get_run(off.run_id).data.metrics
    assert not [key for key in logged if key.startswith("system/")]


def test_epochs_read_back_in_the_engines_terms(prepared_project: Path) -> None:
    """MLflow holds epoch N at step N; `trainlab diagnose` gets the engine's 0-based epochs back."""
    client, found = pretrain_run(prepared_project)
    curves = fetch_curves(client, found.info.run_id)
    logged = json.loads((prepared_project / "reports/pretrain/curves.json").read_text())
    assert curves["epoch/train_loss"] == [(row["epoch"] - 1, row["train_loss"]) for row in logged]
    assert [s for s, _ in curves["val/loss"]] == list(range(len(logged)))
    assert curves["train/loss"][0][0] == 0 and "train/step_loss" not in curves   # the per-step loss
    # Another tool's run (no epoch-axis tag) is read as it was logged.
    raw = {"train/loss": [(1, 0.5)], "val/loss": [(1, 0.4)]}
    assert from_mlflow(raw, {}) == raw


def test_diagnose_reads_a_logged_run_as_the_stage_saw_it(prepared_project: Path) -> None:
    """`trainlab diagnose RUN_ID` on the MLflow copy of the curves finds what the stage found live."""
    client, found = pretrain_run(prepared_project)
    result = trainlab(["diagnose", found.info.run_id], prepared_project,
                      MLFLOW_TRACKING_URI=f"sqlite:///{prepared_project / 'mlflow.db'}")
    first = result.stdout.splitlines()[0]
    live = found.data.tags["trainlab.diagnosis"]
    assert first.split(": ", 1)[1].replace(" ", "") == live, (first, live)


def test_a_resumed_runs_backfill_lands_on_the_same_axis(prepared_project: Path, tmp_path: Path) -> None:
    """After a resume the run streams epoch 2 live, then backfills epoch 1 from the recorded curves:
    each point once, at the step the live hook would have used."""
    from types import SimpleNamespace

    from trainlab.training.tracking_hook import TrackingHook

    params = load_params(prepared_project / "params.yaml")
    params = params.model_copy(update={"tracking": params.tracking.model_copy(
        update={"system_metrics": False, "uri": f"sqlite:///{tmp_path / 'resume.db'}"})})
    recorded = {"val/loss": [(0, 0.9), (1, 0.7)], "epoch/train_loss": [(0, 1.0), (1, 0.8)],
                "train/loss": [(0, 1.1), (5, 0.9), (10, 0.8)]}    # engine names, 0-based epochs
    with StageRun("pretrain", params) as stage:
        hook = TrackingHook(stage)
        hook.on_metrics(SimpleNamespace(), [("train/loss", 0.8, 10)])
        hook.on_epoch_end(SimpleNamespace(epoch=1), {"val/loss": 0.7, "epoch/train_loss": 0.8})
        assert stage.backfill(recorded) == 4     # epoch 1's two values and steps 0 and 5
    client = MlflowClient(params.tracking.uri)

    def points(key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(stage.run_id, key))
    assert points("val/loss") == [(1, 0.9), (2, 0.7)]
    assert points("train/loss") == [(1, 1.0), (2, 0.8)]          # the epoch train loss, beside val/loss
    assert points("train/step_loss") == [(0, 1.1), (5, 0.9), (10, 0.8)]


def test_epoch_metrics_are_written_every_few_seconds_and_all_at_the_fit_end(prepared_project: Path, tmp_path: Path,
                                                                            monkeypatch) -> None:
    """A write per epoch cost short epochs a third of their time: epochs are buffered until
    LIVE_WRITE_EVERY_S has passed since the last write, and the fit's end writes the rest."""
    from types import SimpleNamespace

    from trainlab.training import tracking_hook

    params = load_params(prepared_project / "params.yaml")
    params = params.model_copy(update={"tracking": params.tracking.model_copy(
        update={"system_metrics": False, "uri": f"sqlite:///{tmp_path / 'live.db'}"})})
    clock = [100.0]
    monkeypatch.setattr(tracking_hook, "monotonic", lambda: clock[0])
    client = MlflowClient(params.tracking.uri)
    with StageRun("pretrain", params) as stage:
        hook = tracking_hook.TrackingHook(stage)

        def epoch(n: int, seconds: float) -> list[int]:
            clock[0] += seconds
            hook.on_epoch_end(SimpleNamespace(epoch=n), {"val/loss": 1.0 / (n + 1)})
            return sorted(m.step for m in client.get_metric_history(stage.run_id, "val/loss"))

        assert epoch(0, 1.0) == []                      # 1 s after the fit started: buffered
        assert epoch(1, 1.0) == []
        assert epoch(2, tracking_hook.LIVE_WRITE_EVERY_S) == [1, 2, 3]   # due: everything so far
        assert epoch(3, 1.0) == [1, 2, 3]
        hook.on_fit_end(SimpleNamespace())
        assert sorted(m.step for m in client.get_metric_history(stage.run_id, "val/loss")) == [1, 2, 3, 4]
