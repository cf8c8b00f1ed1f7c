"""Provoked failures through the real pipeline: each is one `dvc exp run pretrain -S ...`.

The same four settings tests/test_diagnose_real.py checks on the bare engine (absurd lr,
tiny model, big unregularised model on a few hundred samples, deep plain sigmoid net),
here made the way a user makes them, on the shrunk params in a throwaway git repo. Each
run's diagnosis must reach both places a user looks: the terminal output of `dvc exp
run`, and the stage's MLflow run (tag `trainlab.diagnosis` and a `diagnosis.md`
artifact). The diverging run fails (exit 3 from the stage), and is diagnosed all the same.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trainlab.testing import BIN, make_project, run, small_params

pytestmark = pytest.mark.slow

ABSURD_SGD = ["pretrain.optimizer.name=sgd", "trainer.clip_grad_norm=null", "trainer.log_every_steps=1",
              "pretrain.epochs=4", "pretrain.early_stopping.enabled=false"]
DIVERGES = "diverging-lr"    # the one case whose stage fails (TrainingDiverged, exit 3)
# name: (the -S settings, the findings of which at least one must be named, findings that must not be)
PROVOKED = {
    # batch norm keeps the loss finite at lr 50: the run finishes, and is told its lr is too high
    "absurd-lr": ([*ABSURD_SGD, "pretrain.optimizer.lr=50"],
                  {"lr_too_high", "diverged"}, {"healthy", "vanishing_gradients"}),
    # without batch norm the loss becomes NaN: the stage fails, and still says why
    DIVERGES: ([*ABSURD_SGD, "pretrain.optimizer.lr=1000", "model.batchnorm=false"],
               {"lr_too_high", "diverged"}, {"healthy"}),
    "tiny-model": (["model.arch=logreg", "pretrain.epochs=5", "pretrain.early_stopping.enabled=false"],
                   {"underfitting"}, {"healthy"}),
    "overfit": (["model.arch=mlp", "model.width=128", "model.depth=3", "model.dropout=0.0",
                 "pretrain.optimizer.weight_decay=0.0", "pretrain.epochs=40",
                 "pretrain.early_stopping.enabled=false", "data.source.num_samples=400",
                 "data.source.val_fraction=0.25"],
                {"overfitting"}, {"healthy", "underfitting"}),
    "deep-sigmoid": (["model.arch=cnn1d", "model.activation=sigmoid", "model.batchnorm=false", "model.depth=12",
                      "trainer.layer_grad_norm_every=5"],
                     {"vanishing_gradients"}, {"healthy"}),
}


@pytest.fixture(scope="module")
def committed_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shrunk project, committed, so every experiment starts from the same baseline."""
    return make_project(tmp_path_factory.mktemp("provoked") / "project", small_params())


def pretrain_run(project: Path, exp_name: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("trainlab")
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`dvc.exp_name` = '{exp_name}' and tags.`dvc.stage` = 'pretrain'")
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


@pytest.mark.parametrize("case", list(PROVOKED))
def test_provoked_run_is_diagnosed_in_terminal_and_mlflow(committed_project: Path, case: str) -> None:
    settings, expected, excluded = PROVOKED[case]
    project = committed_project
    run(["git", "checkout", "-q", "--", "."], project)   # back to the committed baseline params
    args = [str(BIN / "dvc"), "exp", "run", "pretrain", "--name", case]
    for setting in settings:
        args += ["-S", setting]
    result = run(args, project, check=False)
    said = result.stdout + result.stderr
    assert (result.returncode != 0) == (case == DIVERGES), said[-3000:]
    if case == DIVERGES:
        assert "error: training diverged" in said

    line = re.search(r"^diagnosis \(pretrain\): (.+)$", said, re.MULTILINE)
    assert line, said[-3000:]
    named = set(line.group(1).split(", "))
    assert named & expected and not named & excluded, said[-3000:]
    assert "try: " in said    # each finding comes with what to change

    client, stage_run = pretrain_run(project, case)
    assert stage_run.info.status == ("FAILED" if case == DIVERGES else "FINISHED")
    assert set(stage_run.data.tags["trainlab.diagnosis"].split(",")) == named
    report = Path(client.download_artifacts(stage_run.info.run_id, "diagnosis.md",
                                            str(project / f"downloaded-{case}"))).read_text()
    assert report.startswith("# Training diagnosis")
    assert all(f"`{name}`" in report or name in report for name in named)
