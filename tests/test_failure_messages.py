"""Messages that said the wrong thing, or too little: each now says what happened and what to do.

The `mlflow ui` command a stage prints pastes as one argument for a path with spaces; a
`mysql://` URL without its driver gets a MySQL hint (it got PostgreSQL's); Ctrl-C in
ensemble or evaluate no longer claims a checkpoint they never keep; seed 1e23 is told the
allowed range; rerunning a single search trial says what to rerun instead.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from trainlab.config import load_params, validate
from trainlab.errors import ParamsError
from trainlab.testing import copy_project, small_params, trainlab
from trainlab.tracking.links import run_link
from trainlab.tracking.store import as_fault

from helpers.console import invoke, without_tracking_uri
from helpers.tracking import client_of, experiment_id


def test_the_mlflow_ui_command_pastes_as_one_argument_for_a_path_with_spaces() -> None:
    uri = "sqlite:////home/me/my projects/trainlab/mlflow.db"
    link = run_link(uri, "1", "abc")
    command = link.split("`")[1]
    assert shlex.split(command) == ["mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                                    "--port", "5000"]
    plain = run_link("sqlite:////srv/project/mlflow.db", "1", "abc")   # nothing to quote: as before
    assert plain.startswith("`mlflow ui --backend-store-uri sqlite:////srv/project/mlflow.db --host")


@pytest.mark.parametrize(("uri", "package", "hint"), [
    ("mysql://me:secret@127.0.0.1:9/db", "MySQLdb", "(pip install mysqlclient)"),
    ("mssql://me:secret@127.0.0.1:9/db", "pyodbc", "(pip install pyodbc)"),
    ("postgresql://me:secret@127.0.0.1:9/db", "psycopg",
     "(pip install psycopg[binary]), or name an installed driver: postgresql+psycopg2://..."),
])
def test_a_missing_driver_gets_a_hint_for_its_own_database(uri: str, package: str, hint: str) -> None:
    line = str(as_fault(ImportError(f"No module named {package!r}", name=package), uri, opening=True))
    assert line.endswith(f"the Python package {package!r} this URL needs is not installed {hint}"), line
    scheme = uri.split(":")[0]
    assert all(other not in line for other in ("postgresql", "mysql", "mssql") if other != scheme), line
    assert "secret" not in line


@pytest.mark.parametrize(("key", "allowed"), [("seed", "0 to 4294967295"), ("search.seed", "0 to 400000"),
                                              ("data.split_seed", "0 to 4294967295"),
                                              ("finetune.epochs", "1 to 100000 or auto")])
def test_a_number_too_large_for_an_integer_is_told_the_range(key: str, allowed: str) -> None:
    with pytest.raises(ParamsError) as raised:
        validate(small_params(**{key.replace(".", "__"): 1e23}))
    assert str(raised.value) == f"params.yaml: {key}: must be an integer from {allowed}, got 1e+23"


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "work"), [("ensemble", "trainlab.ensemble.stage.build_ensemble"),
                                             ("evaluate", "trainlab.evaluation.stage.evaluate_all")])
def test_ctrl_c_in_a_stage_without_checkpoints_does_not_promise_one(stage: str, work: str, prepared_project: Path,
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    project = copy_project(prepared_project, tmp_path / "project")
    monkeypatch.chdir(project)
    without_tracking_uri(monkeypatch)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(work, interrupted)
    done = invoke([stage])
    assert done.exit_code == 130, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"interrupted: {stage} keeps no checkpoint and left no file half-written; rerun it to start again")


def test_ctrl_c_in_a_training_stage_still_says_its_checkpoint_is_kept() -> None:
    from trainlab.cli import interrupted_line

    for stage in ("pretrain", "finetune", "search"):
        assert interrupted_line(stage) == "interrupted: the last checkpoint is kept; rerun to resume"


def test_rerunning_a_single_search_trial_says_what_to_rerun(prepared_project: Path, tmp_path: Path) -> None:
    project = copy_project(prepared_project, tmp_path / "project")
    client = client_of(project)
    parent = client.create_run(experiment_id(client), run_name="search", tags={"trainlab.stage": "search"})
    trial = client.create_run(experiment_id(client), run_name="search trial 1 (lr=0.003)",
                              tags={"trainlab.stage": "search", "git.commit": "deadbeef" * 5, "git.dirty": "false",
                                    "optuna.slot": "1", "mlflow.parentRunId": parent.info.run_id})
    resolved = load_params(project / "params.yaml").model_dump(mode="json")
    client.log_text(trial.info.run_id, json.dumps(resolved), "config/resolved_params.json")

    result = trainlab(["rerun", trial.info.run_id], project, check=False)

    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: run {trial.info.run_id}: is search trial 1, which is not rerun alone (its seed and values come "
        f"from the study); rerun the whole search with `trainlab rerun {parent.info.run_id}`, or fine-tune with "
        f"its values: put them into params.yaml and run `dvc repro finetune`")
