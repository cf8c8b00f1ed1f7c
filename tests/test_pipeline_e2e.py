"""The whole pipeline: real `dvc repro` on the shrunk params in a fresh git repo, then a
`dvc exp run` that changes the finetune lr and reruns only finetune and what follows."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from trainlab.testing import BIN, run

from helpers.tracking import label

STAGES = ("prepare", "pretrain", "finetune", "search", "ensemble", "evaluate")
# Keys every stage's metrics file must hold (a stable subset; see each stage).
STAGE_KEYS = {
    "prepare": {"target/train/samples", "target/num_classes"},
    "pretrain": {"val/acc", "val/loss", "best_epoch"},
    "finetune": {"val/acc", "transfer/gain", "probe/val_acc", "scratch/val_acc", "linear/val_acc"},
    "search": {"best/val/loss", "trials/complete"},
    "ensemble": {"heldout/acc/ensemble", "heldout/acc/member_best", "members"},
    "evaluate": {"test/acc/ensemble", "test/loss/finetuned", "test/ece/ensemble", "test/f1_macro/scratch",
                 "test/ece_uncalibrated/ensemble", "champion/acc"},
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
        assert STAGE_KEYS[stage] <= set(data), (stage, sorted(data))
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
    assert exp_finetune["val/loss"] != before["finetune"]["val/loss"]

    diff = json.loads(dvc(["metrics", "diff", "--json"], project).stdout)
    assert "reports/finetune/metrics.json" in diff
    assert diff["reports/finetune/metrics.json"]["val/loss"]["old"] == before["finetune"]["val/loss"]
    assert diff["reports/finetune/metrics.json"]["val/loss"]["new"] == exp_finetune["val/loss"]
    # Stages upstream of finetune did not rerun, so their metrics cannot differ.
    assert "reports/prepare/metrics.json" not in diff and "reports/pretrain/metrics.json" not in diff

    runs = top_level_runs(project)
    assert Counter(label(r) for r in runs) == Counter(
        {"prepare": 1, "pretrain": 1, "finetune": 2, "search": 2, "ensemble": 2, "evaluate": 2})
    rerun = [r for r in runs if r.data.tags.get("dvc.exp_name") == exp["name"]]
    assert sorted(label(r) for r in rerun) == sorted(STAGES[2:])
    assert all(float(r.data.params["finetune.optimizer.lr"]) == 0.002 for r in rerun if label(r) == "finetune")
    assert json.loads(dvc(["status", "--json"], project).stdout) == {}
