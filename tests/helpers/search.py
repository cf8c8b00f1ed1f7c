"""Search test helpers: tiny search params and projects, reading studies, journals and runs."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from trainlab.testing import copy_project, small_params, write_params

LR = "finetune.optimizer.lr"


TINY_SPACE = {
    LR: {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True},
    "model.dropout": {"type": "categorical", "choices": [0.0, 0.2]},
}


# ------------------------------------------------------------------------------- helpers
def search_params(**overrides: Any) -> dict:
    """The shrunk real params.yaml with a tiny search (use __ for dots)."""
    base = {"search__n_trials": 3, "search__epochs": 2, "search__space": TINY_SPACE, "search__grid_points": 2}
    return small_params(**{**base, **overrides})


def new_project(prepared: Path, target: Path, params: dict) -> Path:
    project = copy_project(prepared, target)
    write_params(project, params)
    return project


def journal(project: Path) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend

    path = project / ".trainlab/search/study.journal"
    assert path.is_file(), f"{path}: no study was created"
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def studies(project: Path) -> dict[str, list[optuna.trial.FrozenTrial]]:
    """Every study in the project's journal with its trials."""
    storage = journal(project)
    return {name: optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
            for name in optuna.get_all_study_names(storage)}


def only_study(project: Path) -> list[optuna.trial.FrozenTrial]:
    found = studies(project)
    assert len(found) == 1, f"expected one study, found {list(found)}"
    return next(iter(found.values()))


def killed(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Trials killed with their process: each is named by the re-queued copy that replaced it."""
    numbers = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    return [t for t in trials if t.number in numbers]


def counted(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Trials that use up the budget: finished, not killed (re-queued), not surplus ones."""
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    dead = {t.number for t in killed(trials)}
    return [t for t in trials if t.state in states and t.number not in dead and not t.user_attrs.get("surplus")]


def by_slot(trials: list[optuna.trial.FrozenTrial]) -> dict[int, tuple[dict, float | None, str]]:
    """slot -> (params, value, state) of the counted trials; fails on a slot counted twice."""
    rows = {}
    for t in counted(trials):
        slot = int(t.user_attrs["slot"])
        assert slot not in rows, f"slot {slot} counted twice"
        rows[slot] = (t.params, t.value, t.state.name)
    return rows


def mlflow_client(project: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{project / 'mlflow.db'}")


def mlflow_runs(project: Path):
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("trainlab")
    return client.search_runs([experiment.experiment_id], max_results=1000)


def metric_steps(project: Path, run_id: str, key: str) -> list[int]:
    """The steps at which run `run_id` logged `key`, sorted."""
    return sorted(m.step for m in mlflow_client(project).get_metric_history(run_id, key))


def metrics(project: Path) -> dict:
    return json.loads((project / "reports/search/details.json").read_text())


# ------------------------------------------------------------------------- kill recovery
def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the search ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
