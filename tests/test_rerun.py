"""`trainlab rerun` (a recorded run reproduced and compared exactly) and `trainlab diagnose RUN_ID`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from trainlab.config import load_params
from trainlab.testing import copy_project, run, small_params, trainlab, write_params

from helpers.tracking import client_of, experiment_id, label, only_run, steps_of


def timing(key: str) -> bool:
    return "time" in key or "per_s" in key or key.startswith("system/")   # clock-driven: differ every run


def compared_keys(metrics: dict[str, float]) -> list[str]:
    return [key for key in metrics if not timing(key)]


def reruns_of(client: MlflowClient, run_id: str) -> dict:
    runs = client.search_runs([experiment_id(client)], filter_string=f"tags.`trainlab.rerun_of` = '{run_id}'")
    return {label(r): r for r in runs}


def worktrees(project: Path) -> list[str]:
    listing = run(["git", "worktree", "list", "--porcelain"], project).stdout
    return [line.split(" ", 1)[1] for line in listing.splitlines() if line.startswith("worktree ")]


# ---------------------------------------------------------------------------------------------
# rerun
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_rerun_in_a_worktree_reproduces_pretrain_exactly(prepared_project: Path, tmp_path: Path) -> None:
    project = copy_project(prepared_project, tmp_path / "project")
    original = only_run(project, "pretrain")
    run_id = original.info.run_id

    result = trainlab(["rerun", run_id], project, check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    keys = compared_keys(original.data.metrics)
    assert len(keys) >= 15 and "epoch/time_s" in original.data.metrics
    assert result.stdout.strip().splitlines() == [f"identical: {len(keys)} metrics match exactly"]
    new = reruns_of(client_of(project), run_id)
    assert sorted(new) == ["prepare", "pretrain"]   # dvc repro rebuilt the pipeline up to pretrain
    rerun = new["pretrain"]
    assert rerun.info.status == "FINISHED" and rerun.info.run_id != run_id
    assert rerun.data.tags["git.commit"] == original.data.tags["git.commit"]
    assert rerun.data.params == original.data.params
    # Checked here without the command's own comparison: every non-timing value is bit-equal.
    assert {k: rerun.data.metrics[k] for k in keys} == {k: original.data.metrics[k] for k in keys}
    assert worktrees(project) == [str(project.resolve())]   # the temporary worktree is gone


@pytest.mark.slow
def test_rerun_in_place_reports_a_changed_metric(prepared_project: Path, tmp_path: Path) -> None:
    project = copy_project(prepared_project, tmp_path / "project")
    client = client_of(project)
    original = only_run(project, "pretrain")
    run_id, true_acc = original.info.run_id, original.data.metrics["val/acc"]
    # Tamper with the record: a later, different val/acc becomes the run's latest value.
    client.log_metric(run_id, "val/acc", true_acc + 0.125, step=max(steps_of(client, run_id, "val/acc")) + 1)
    client.set_tag(run_id, "git.dirty", "true")

    result = trainlab(["rerun", "--in-place", run_id], project, check=False)

    assert result.returncode == 1, result.stdout + result.stderr
    keys = compared_keys(original.data.metrics)
    assert result.stdout.strip().splitlines() == [
        f"different: 1 of {len(keys)} metrics differ from run {run_id}",
        f"  val/acc: original {true_acc + 0.125!r}, rerun {true_acc!r}",
    ]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "git.dirty" in warnings[0]
    assert sorted(reruns_of(client, run_id)) == ["pretrain"]   # in place: only the stage itself
    assert worktrees(project) == [str(project.resolve())]


@pytest.mark.slow
def test_rerun_of_evaluate_leaves_the_registry_alone_unless_asked(prepared_project: Path, tmp_path: Path) -> None:
    project = copy_project(prepared_project, tmp_path / "project")
    # Outside the checkout (which --in-place wants clean): fine-tune only, so evaluate has one model.
    params = write_params(tmp_path, small_params(finetune__compare_scratch=False, finetune__linear_probe=False))
    trainlab(["finetune", "--params", str(params)], project)
    trainlab(["evaluate", "--params", str(params)], project)
    client = client_of(project)
    original = only_run(project, "evaluate")
    assert str(client.get_model_version_by_alias("trainlab", "champion").version) == "1"

    result = trainlab(["rerun", "--in-place", original.info.run_id], project, check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().startswith("identical: ")
    assert [str(v.version) for v in client.search_model_versions("name = 'trainlab'")] == ["1"]
    assert str(client.get_model_version_by_alias("trainlab", "champion").version) == "1"
    rerun = reruns_of(client, original.info.run_id)["evaluate"]
    assert rerun.data.params["evaluate.register_model"] == "False" and "registry.version" not in rerun.data.tags

    asked = trainlab(["rerun", "--in-place", "--register", original.info.run_id], project, check=False)

    assert asked.returncode == 0, asked.stdout + asked.stderr
    assert sorted(str(v.version) for v in client.search_model_versions("name = 'trainlab'")) == ["1", "2"]
    # The same model on the same data: no lower held-out loss, so the champion stays (tracking/promotion.py).
    assert str(client.get_model_version_by_alias("trainlab", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("trainlab", "challenger").version) == "2"


def test_rerun_refuses_a_commit_missing_from_the_repo(prepared_project: Path, tmp_path: Path) -> None:
    project = copy_project(prepared_project, tmp_path / "project")
    client = client_of(project)
    missing = "deadbeef" * 5
    forged = client.create_run(experiment_id(client), run_name="pretrain",
                               tags={"trainlab.stage": "pretrain", "git.commit": missing, "git.dirty": "false"})
    resolved = load_params(project / "params.yaml").model_dump(mode="json")
    client.log_text(forged.info.run_id, json.dumps(resolved), "config/resolved_params.json")

    result = trainlab(["rerun", forged.info.run_id], project, check=False)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == f"error: commit {missing[:12]} of the recorded run is not in the repository at {project}"
    assert "Traceback" not in result.stderr and worktrees(project) == [str(project.resolve())]


def test_rerun_in_place_refuses_another_commit(prepared_project: Path, tmp_path: Path) -> None:
    project = copy_project(prepared_project, tmp_path / "project")
    run_id = only_run(project, "pretrain").info.run_id
    run(["git", "commit", "-q", "--allow-empty", "-m", "later work"], project)

    result = trainlab(["rerun", "--in-place", run_id], project, check=False)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --in-place: HEAD is ")
    assert reruns_of(client_of(project), run_id) == {}


# ---------------------------------------------------------------------------------------------
# diagnose
# ---------------------------------------------------------------------------------------------
def overfitting_epochs(epochs: int = 30, turn: int = 8) -> dict[str, np.ndarray]:
    """Keras-style names: train loss falls towards 0, val loss is U-shaped with its minimum at `turn`."""
    t = np.arange(epochs, dtype=float)
    down = 0.45 + 1.85 * (np.exp(-t / 2.5) - np.exp(-turn / 2.5)) / (1 - np.exp(-turn / 2.5))
    up = 0.45 + 0.02 * (t - turn) + 0.0015 * (t - turn) ** 2
    return {
        "loss": 0.005 + 2.3 * np.exp(-(t + 0.5) / 3.5),
        "val_loss": np.where(t <= turn, down, up),
        "accuracy": 1.0 - 0.9 * np.exp(-(t + 0.5) / 3.5),
        "val_accuracy": 0.86 - 0.76 * np.exp(-(t + 1) / 2.5),
    }


def test_diagnose_a_trainlab_run(prepared_project: Path, tmp_path: Path) -> None:
    project = copy_project(prepared_project, tmp_path / "project")
    found = only_run(project, "pretrain")
    result = trainlab(["diagnose", found.info.run_id], project)
    # Diagnosing the curves read back from MLflow agrees with the stage's own diagnosis.
    expected = found.data.tags["trainlab.diagnosis"].replace(",", ", ")
    assert result.stdout.splitlines()[0] == f"diagnosis (pretrain): {expected}"
