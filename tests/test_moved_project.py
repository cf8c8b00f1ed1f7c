"""A project folder that is moved or copied keeps its runs in its own folder (issue 28, item 7).

MLflow's sqlite store records absolute paths (each experiment's artifact location, and under
it every run's and model's), so a copied or renamed project read and wrote run files and
models in the original folder. The first stage run in the new place points the store at the
`mlruns/` beside it, says so in one line, and the old folder is never written again.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from trainlab.config import load_params
from trainlab.testing import small_params, write_params
from trainlab.tracking import StageRun


def stage_run(project: Path) -> str:
    """One (tiny) stage run in `project`, as a stage makes it: its params file and config logged."""
    os.chdir(project)
    # Each stage is a process of its own; here one process runs several, and MLflow's
    # set_tracking_uri leaves the previous store in the environment.
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    params = load_params(write_params(project, small_params(tracking__system_metrics=False)))
    with StageRun("prepare", params) as run:
        run.log_metrics({"rows": 1.0}, step=0)
    return run.run_id


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def original(tmp_path: Path, monkeypatch) -> tuple[Path, str]:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)   # restored after the test (stage_run changes directory)
    project = tmp_path / "project"
    project.mkdir()
    return project, stage_run(project)


def test_a_copied_project_writes_its_runs_into_its_own_folder(original, tmp_path: Path, capsys) -> None:
    project, first = original
    before = files_under(project / "mlruns")
    copy = Path(shutil.copytree(project, tmp_path / "copy"))
    capsys.readouterr()

    second = stage_run(copy)

    said = capsys.readouterr().out
    assert f"[prepare] tracking store {copy / 'mlflow.db'} was made in {project}" in said
    assert files_under(project / "mlruns") == before   # the original is left alone
    client = MlflowClient(f"sqlite:///{copy / 'mlflow.db'}")
    for run_id in (first, second):
        assert client.get_run(run_id).info.artifact_uri.startswith(str(copy / "mlruns"))
        assert (Path(client.download_artifacts(run_id, "config/params.yaml", str(tmp_path / run_id)))
                .read_text() == (copy / "params.yaml").read_text())
    assert all(e.artifact_location.startswith(str(copy / "mlruns")) for e in client.search_experiments())
    # Once moved, the next stage says nothing more.
    stage_run(copy)
    assert "was made in" not in capsys.readouterr().out


def test_a_renamed_project_reads_its_old_runs_where_they_now_are(original, tmp_path: Path) -> None:
    project, first = original
    moved = project.rename(tmp_path / "renamed")
    stage_run(moved)
    client = MlflowClient(f"sqlite:///{moved / 'mlflow.db'}")
    assert client.list_artifacts(first, "config")
    assert not project.exists()
