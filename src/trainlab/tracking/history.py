"""Read runs back from MLflow: curves for the diagnosis, params and metrics for reruns."""

from __future__ import annotations

import os

from trainlab import paths
from trainlab.errors import UserError


def client_for(uri: str | None):
    """An MlflowClient for `uri`, MLFLOW_TRACKING_URI, or the project's sqlite store."""
    from mlflow.tracking import MlflowClient

    from trainlab.tracking.run import check_reachable

    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths.MLFLOW_DB.resolve()}"
    check_reachable(uri)
    return MlflowClient(uri)


def get_run(client, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        raise UserError(f"run {run_id}: not found in {client.tracking_uri}") from None


def fetch_curves(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every metric of a run with its full step history, as {name: [(step, value)]}."""
    run = get_run(client, run_id)
    curves = {}
    for key in run.data.metrics:
        history = client.get_metric_history(run_id, key)
        curves[key] = [(m.step, m.value) for m in sorted(history, key=lambda m: (m.step, m.timestamp))]
    return curves
