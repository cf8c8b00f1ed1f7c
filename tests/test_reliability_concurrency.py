"""Concurrency: stages and search workers writing to one MLflow store at the same time lose
no metric point.

Expected counts come from what the stages wrote for DVC (steps and epochs in
reports/*/details.json) or from the prepared data, never from the tracking store itself.
Two search workers sharing one Optuna study without losing a trial is test_search.py's
test_two_workers_share_one_study; here, the metric points of their child runs.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from trainlab.models import load_model
from trainlab.testing import BIN, clean_env, copy_project, small_params, trainlab, write_params
from trainlab.tracking.mlflow_fields import summary_key

from helpers.search import TINY_SPACE
from helpers.tracking import label

pytestmark = pytest.mark.slow

LAYER_EVERY = small_params()["trainer"]["layer_grad_norm_every"]
PER_STEP = ("train/step_loss", "lr", "grad_norm")
PER_EPOCH = ("train/loss", "train/acc", "val/loss", "val/acc", "epoch/lr", "epoch/time_s",   # step = epoch, 1-based
             "epoch/samples_per_s")


def point_counts(client: MlflowClient, run) -> dict[str, list[int]]:
    """Every training metric of the run -> the sorted steps of its history points (system/* aside:
    MLflow's monitor samples by the clock, not by step)."""
    return {key: sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
            for key in run.data.metrics if not key.startswith("system/")}


def block_names(project: Path, frozen: tuple[str, ...] = ()) -> set[str]:
    """The per-block gradient-norm names (NN_<block>, head last) of the project's model, frozen ones left out."""
    model, _ = load_model(project / "models/pretrained.pt")
    return {f"{i:02d}_{name}" for i, name in enumerate([*model.block_names, "head"]) if name not in frozen}


def expected_points(steps: int, epochs: int, layer_every: int, blocks: set[str]) -> dict[str, list[int]]:
    """Per-step keys at every optimizer step, per-epoch keys at every epoch, per-block norms every N steps."""
    expected = {key: list(range(steps)) for key in PER_STEP}
    expected.update({key: list(range(1, epochs + 1)) for key in PER_EPOCH})
    expected.update({f"grad_norm/{block}": list(range(0, steps, layer_every)) for block in blocks})
    return expected


def test_two_pretrains_on_one_new_sqlite_store_lose_no_metric(prepared_project: Path, tmp_path: Path) -> None:
    # Both start on a store that does not exist yet: creating its tables used to race
    # (alembic "expected to match one row"), and the slower stage crashed.
    shared = tmp_path / "shared"
    shared.mkdir()
    uri = f"sqlite:///{shared / 'mlflow.db'}"
    projects = []
    for seed, log_every in ((0, 1), (1, 7)):   # different flush cadences interleave differently
        project = copy_project(prepared_project, tmp_path / f"project{seed}")
        write_params(project, small_params(seed=seed, pretrain__epochs=3, trainer__log_every_steps=log_every))
        projects.append(project)
    procs = [subprocess.Popen([str(BIN / "trainlab"), "pretrain"], cwd=project, env=clean_env(MLFLOW_TRACKING_URI=uri),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for project in projects]
    try:
        outputs = [proc.communicate(timeout=900) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("trainlab")
    runs = {Path(r.data.tags["trainlab.cwd"]).name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["project0", "project1"]
    first, second = runs.values()
    # They really overlapped in time.
    assert first.info.start_time < second.info.end_time and second.info.start_time < first.info.end_time
    for project in projects:
        run = runs[project.name]
        assert run.info.status == "FINISHED"
        reported = json.loads((project / "reports/pretrain/details.json").read_text())
        counts = point_counts(client, run)
        expected = expected_points(reported["steps"], reported["epochs_run"], LAYER_EVERY, block_names(project))
        # Every score of details.json as final.* (slashes made dots); its 0/1 diagnosis/* flags are
        # the tag trainlab.diagnosis.
        expected.update({summary_key(key): [reported["epochs_run"]] for key, value in reported.items()
                         if isinstance(value, (int, float)) and not key.startswith("diagnosis/")})
        assert counts == expected, project.name
        # The values too: the per-epoch curve in MLflow is the one DVC got.
        curves = json.loads((project / "reports/pretrain/curves.json").read_text())
        history = sorted(client.get_metric_history(run.info.run_id, "val/loss"), key=lambda m: m.step)
        assert [m.value for m in history] == [row["val_loss"] for row in curves]


def test_two_search_workers_log_every_point_of_every_trial(prepared_project: Path, tmp_path: Path) -> None:
    project = copy_project(prepared_project, tmp_path / "project")
    epochs, trials = 2, 4
    params = small_params(search__sampler="random", search__pruner="none", search__n_trials=trials,
                          search__workers=2, search__epochs=epochs, search__space=TINY_SPACE)
    write_params(project, params)
    trainlab(["search"], project)

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("trainlab")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parent = next(r for r in runs if label(r) == "search" and "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["optuna.slot"] for r in children) == [str(slot) for slot in range(trials)]
    assert all(r.info.run_name.startswith(f"search trial {r.data.tags['optuna.slot']} (lr=") for r in children)
    assert len({r.data.tags["trainlab.pid"] for r in children}) == 2   # written by two processes
    # Independent reference: the trial's steps from the prepared data and the batch size.
    train_size = len(np.load(project / "data/prepared/target/train_y.npy"))
    steps = epochs * math.ceil(train_size / params["finetune"]["batch_size"])
    frozen = tuple(params["finetune"]["freeze"])   # frozen blocks have no gradient norm
    for child in children:
        assert child.info.status == "FINISHED"
        counts = point_counts(client, child)
        expected = expected_points(steps, epochs, LAYER_EVERY, block_names(project, frozen))
        expected.update({key: [epochs] for key in counts if key.startswith("final.")})
        assert {key for key in counts if key.startswith("final.")} >= {"final.val.loss", "final.steps"}
        assert counts == expected, child.info.run_name
        assert child.data.metrics["final.steps"] == steps
