"""Every file a stage writes is one of its outputs in dvc.yaml (issue 28, item 3).

`reports/ensemble/members.json` was written by ensemble and kept in git, but declared
nowhere: after any repro that changed it, evaluate's run and the registered version were
tagged git.dirty=true ("with uncommitted changes" on the model card), and `dvc checkout` /
`dvc exp apply` never restored it, so after DVC brought an ensemble back from its cache the
file described the previous one. Here each stage of a tiny project runs as DVC runs it
(`trainlab <stage>` in the project folder), and every file it adds or changes, anywhere in
the project but the state DVC, git and MLflow keep for themselves, must lie under one of
that stage's `outs`, `metrics` or `plots`; and every one of those must exist afterwards.
For each task kind: classification (MNIST-1D), and a regression on a raw table.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from trainlab.testing import make_project, small_params, trainlab

pytestmark = pytest.mark.slow

STAGES = ("prepare", "pretrain", "finetune", "search", "ensemble", "evaluate")
# Not stage outputs: git's and DVC's own folders, MLflow's store, resume state and the study.
NOT_OUTPUTS = (".git", ".dvc", ".trainlab", "mlruns", "mlflow.db", "dvc_plots", "__pycache__")


def snapshot(project: Path) -> dict[str, str]:
    """Every file of the project (NOT_OUTPUTS aside) and its content hash."""
    found = {}
    for path in project.rglob("*"):
        relative = path.relative_to(project)
        if path.is_file() and not any(part.startswith(NOT_OUTPUTS) for part in relative.parts):
            found[relative.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def declared(project: Path, stage: str) -> list[str]:
    spec = yaml.safe_load((project / "dvc.yaml").read_text())["stages"][stage]
    return [str(next(iter(entry)) if isinstance(entry, dict) else entry).rstrip("/")
            for kind in ("outs", "metrics", "plots") for entry in spec.get(kind) or []]


def undeclared_writes(project: Path) -> dict[str, list[str]]:
    """Run the stages in order; per stage, the files it wrote that dvc.yaml does not declare,
    and the declared outputs it left missing."""
    found: dict[str, list[str]] = {}
    for stage in STAGES:
        before = snapshot(project)
        trainlab([stage], project)
        after = snapshot(project)
        outs = declared(project, stage)
        written = [path for path, digest in after.items() if before.get(path) != digest]
        wrong = [path for path in written if not any(path == out or path.startswith(f"{out}/") for out in outs)]
        missing = [f"{out} (declared, not written)" for out in outs if not (project / out).exists()]
        if wrong or missing:
            found[stage] = sorted(wrong) + missing
    return found


def test_each_stage_writes_only_its_declared_outputs_classification(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    assert undeclared_writes(project) == {}


def test_each_stage_writes_only_its_declared_outputs_regression_table(tmp_path: Path) -> None:
    import pandas as pd

    rng = np.random.default_rng(3)
    n = 160
    frame = pd.DataFrame({"age": rng.normal(40, 10, n).round(), "city": rng.choice(["Lyon", "Oslo", "Lima"], n)})
    frame["price"] = 20.0 * frame["age"] + 300.0 * (frame["city"] == "Oslo") + rng.normal(0, 40, n)
    table = "data/own/table.csv"
    params = small_params(data__name="file", data__file__path=table, data__file__label="price",
                          data__train_samples=None)
    project = make_project(tmp_path / "project", params)
    frame.to_csv(project / table, index=False)
    assert undeclared_writes(project) == {}
