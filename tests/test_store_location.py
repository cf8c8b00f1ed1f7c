"""The project's MLflow store is found from the repository DVC names, not the working directory
(the end-to-end check with a real `dvc queue` is tests/test_dvc_queue.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainlab.tracking.store_location import default_store_uri, project_root


def repo(path: Path, *subfolders: str) -> Path:
    (path / ".dvc").mkdir(parents=True)
    for sub in subfolders:
        (path / sub).mkdir(parents=True)
    return path


def test_outside_dvc_the_working_directory_is_the_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert project_root(tmp_path) == tmp_path.resolve()
    assert default_store_uri(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"


def test_a_queued_experiments_copy_writes_to_the_parent_repository(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    parent = repo(tmp_path / "project", "sub")
    copy = repo(parent / ".dvc/tmp/exps/tmpabc", "sub")   # where DVC runs a queued experiment
    monkeypatch.setenv("DVC_ROOT", str(parent))
    assert project_root(copy) == parent.resolve()
    assert project_root(copy / "sub") == (parent / "sub").resolve()   # a stage wdir keeps its offset
    assert project_root(parent) == parent.resolve()                     # the workspace itself


def test_a_dvc_root_from_elsewhere_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVC_ROOT", str(repo(tmp_path / "other")))
    plain = tmp_path / "plain"
    plain.mkdir()
    assert project_root(plain) == plain.resolve()   # not inside a DVC repository
