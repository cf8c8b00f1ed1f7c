"""The whole pipeline: real `dvc repro` on the shrunk params in a fresh git repo, then a
`dvc exp run` that changes the finetune lr and reruns only finetune and what follows."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from trainlab.dvc_metrics import MAX_VALUES
from trainlab.testing import BIN, dvc_metric_values, run

from helpers.tracking import label

STAGES = ("prepare", "pretrain", "finetune", "search", "ensemble", "evaluate")
# Keys every stage's metrics file must hold (a stable subset; see each stage).
# What `dvc metrics show` shows, stage by stage (trainlab.dvc_metrics): every other score is in
# details.json and MLflow.
STAGE_KEYS = {
    "prepare": {"prepare/train_samples", "prepare/val_samples", "prepare/test_samples"},
    "pretrain": {"pretrain/val_loss", "pretrain/val_acc"},
    "finetune": {"finetune/heldout_loss", "finetune/heldout_acc"},
    "search": {"search/best_loss", "search/trials"},
    "ensemble": {"ensemble/heldout_loss", "ensemble/members"},
    "evaluate": {"acc", "acc_low", "acc_high", "loss", "ece", "gain", "test/finetuned", "test/scratch", "test/linear",
                 "test/best_trial", "test/ensemble"},
}

pytestmark = pytest.mark.slow


def dvc(args: list[str], project: Path, **kwargs):
    return run([str(BIN / "dvc"), *args], project, **kwargs)


def top_level_runs(project: Path) -> list:
    """Every stage's own MLflow run (child runs of trials and baselines left out)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("trainlab")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"], "a run was left RUNNING"
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def test_dvc_repro_then_an_experiment(project: Path) -> None:
    dvc(["repro"], project)

    shown = json.loads(dvc(["metrics", "show", "--json"], project).stdout)
    files = shown[""]["data"]
    for stage in STAGES:
        data = files[f"reports/{stage}/metrics.json"]["data"]
        assert set(data) == STAGE_KEYS[stage], (stage, sorted(data))
    assert len(dvc_metric_values(project)) <= MAX_VALUES
    assert json.loads(dvc(["status", "--json"], project).stdout) == {}

    runs = top_level_runs(project)
    assert Counter(label(r) for r in runs) == Counter(STAGES)
    assert all(r.info.status == "FINISHED" for r in runs)
    # One `dvc repro` invocation: one pipeline id shared by every stage.
    assert len({r.data.tags["trainlab.pipeline_run"] for r in runs}) == 1

    # Commit the baseline, then change one finetune param in an experiment.
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "baseline"], project)
    before = {stage: files[f"reports/{stage}/metrics.json"]["data"] for stage in STAGES}
    result = dvc(["exp", "run", "-S", "finetune.optimizer.lr=0.002"], project)
    said = result.stdout + result.stderr
    assert "Stage 'prepare' didn't change, skipping" in said
    assert "Stage 'pretrain' didn't change, skipping" in said
    assert "Running stage 'finetune'" in said

    experiments = json.loads(dvc(["exp", "show", "--json"], project).stdout)
    baseline = next(e for e in experiments if e.get("name") == "main")
    (exp,) = [rev for group in baseline["experiments"] for rev in group["revs"]]
    params = exp["data"]["params"]["params.yaml"]["data"]
    assert params["finetune"]["optimizer"]["lr"] == 0.002
    assert baseline["data"]["params"]["params.yaml"]["data"]["finetune"]["optimizer"]["lr"] == 0.003
    exp_finetune = exp["data"]["metrics"]["reports/finetune/metrics.json"]["data"]
    assert exp_finetune["finetune/heldout_loss"] != before["finetune"]["finetune/heldout_loss"]

    diff = json.loads(dvc(["metrics", "diff", "--json"], project).stdout)
    assert "reports/finetune/metrics.json" in diff
    changed = diff["reports/finetune/metrics.json"]["finetune/heldout_loss"]
    assert (changed["old"], changed["new"]) == (before["finetune"]["finetune/heldout_loss"],
                                                exp_finetune["finetune/heldout_loss"])
    # Stages upstream of finetune did not rerun, so their metrics cannot differ.
    assert "reports/prepare/metrics.json" not in diff and "reports/pretrain/metrics.json" not in diff

    runs = top_level_runs(project)
    assert Counter(label(r) for r in runs) == Counter(
        {"prepare": 1, "pretrain": 1, "finetune": 2, "search": 2, "ensemble": 2, "evaluate": 2})
    rerun = [r for r in runs if r.data.tags.get("dvc.exp_name") == exp["name"]]
    assert sorted(label(r) for r in rerun) == sorted(STAGES[2:])
    assert all(float(r.data.params["finetune.optimizer.lr"]) == 0.002 for r in rerun if label(r) == "finetune")
    assert json.loads(dvc(["status", "--json"], project).stdout) == {}
