"""Where a person finds a run: the UI address of a tracking server, or how to open a local store."""

from __future__ import annotations

import shlex

UI_PORT = 5000   # `mlflow ui`'s default port


def run_link(uri: str, experiment_id: str, run_id: str) -> str:
    """`<server>/#/experiments/<id>/runs/<run id>`; for a local store, the `mlflow ui` command and that page."""
    # MLflow 3 opens a fresh browser in its GenAI view; this selects the classic model-training one.
    page = f"#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    if uri.startswith("databricks"):
        return f"run {run_id} in experiment {experiment_id} of {uri}"
    # Bound to localhost, as every server command the project documents (test_security.py);
    # the URI quoted for the shell, so a project path with spaces pastes as one argument.
    command = f"mlflow ui --backend-store-uri {shlex.quote(uri)} --host 127.0.0.1 --port {UI_PORT}"
    return f"`{command}` then http://127.0.0.1:{UI_PORT}/{page}"
