"""Queued DVC experiments run in parallel (`dvc queue start -j 2`) and land in the project's store.

DVC runs a queued experiment in a temporary copy of the repository that it deletes
afterwards; a store found from the working directory was created and lost there. The
reference here is the project's own mlflow.db, read with MlflowClient, and DVC's own
queue status.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from trainlab.testing import BIN, make_project, run

pytestmark = pytest.mark.slow


def dvc(args: list[str], project: Path, **kwargs):
    return run([str(BIN / "dvc"), *args], project, **kwargs)


def wait_for_queue(project: Path, timeout_s: float = 600) -> str:
    """`dvc queue status` once nothing is queued or running (DVC's workers run in the background)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = dvc(["queue", "status"], project).stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"queue still busy after {timeout_s} s:\n{status}")
        time.sleep(3)


def test_two_queued_experiments_run_in_parallel_into_the_projects_store(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    dvc(["repro", "prepare"], project)          # queued runs check the prepared data out of the cache
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "prepared"], project)

    for epochs in (1, 2):
        dvc(["exp", "run", "--queue", "-S", f"pretrain.epochs={epochs}", "pretrain"], project)
    try:
        dvc(["queue", "start", "-j", "2"], project)
        status = wait_for_queue(project)
    finally:
        dvc(["queue", "stop"], project, check=False)
    assert status.count("Success") == 2, status

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("trainlab")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`trainlab.stage` = 'pretrain'")
    assert sorted(r.data.params["pretrain.epochs"] for r in runs) == ["1", "2"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.tags.get("dvc.exp_name") for r in runs)
    # Each ran in its own temporary workspace, with its own resume checkpoints and study.
    assert len({r.data.tags["trainlab.cwd"] for r in runs}) == 2
    assert all(r.data.tags["trainlab.cwd"] != str(project) for r in runs)
    assert not (project / ".trainlab").exists()   # state stays with the experiment, not the project
