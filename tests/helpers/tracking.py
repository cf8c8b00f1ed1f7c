"""Reading what a stage logged to MLflow: the client, the run, metric steps, artifacts."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient


PER_STEP = ("train/step_loss", "lr", "grad_norm")


PER_EPOCH = ("val/loss", "val/acc", "train/loss", "train/acc", "epoch/lr")   # step = epoch, 1-based


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def label(run) -> str:
    """A run's own name: a top-level run's stage (the name the run table shows adds the DVC
    experiment or the pipeline run id: `finetune · shock-wool`), a nested run's name."""
    return run.data.tags.get("trainlab.run_label", run.info.run_name)


def client_of(project: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{project / 'mlflow.db'}")


def experiment_id(client: MlflowClient) -> str:
    return client.get_experiment_by_name("trainlab").experiment_id


def stage_runs(client: MlflowClient, stage: str) -> list:
    """Runs of `stage`, newest first."""
    return client.search_runs([experiment_id(client)], filter_string=f"tags.`trainlab.stage` = '{stage}'",
                              order_by=["attributes.start_time DESC"])


def only_run(project: Path, stage: str):
    runs = stage_runs(client_of(project), stage)
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def steps_of(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def download(client: MlflowClient, run_id: str, path: str, tmp_path: Path) -> Path:
    return Path(client.download_artifacts(run_id, path, str(tmp_path)))
