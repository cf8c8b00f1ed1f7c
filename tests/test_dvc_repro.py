"""`dvc repro` you can trust, with the real dvc CLI on the shrunk params in a throwaway repo.

One pipeline run is shared by the module (it is the slow part): a forced rerun must give
a byte-identical dvc.lock; only what can change a result may make a stage rerun; going
back to earlier params restores outputs from the run-cache; and a teammate who clones
and pulls from a DVC remote gets every output, of any pushed commit, without running a
stage.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from trainlab.testing import BIN, make_project, run

pytestmark = pytest.mark.slow

STAGES = ("prepare", "pretrain", "finetune", "search", "ensemble", "evaluate")


def dvc(args: list[str], project: Path, **kwargs):
    return run([str(BIN / "dvc"), *args], project, **kwargs)


def said_by(result) -> str:
    return result.stdout + result.stderr


def git(args: list[str], project: Path) -> str:
    return run(["git", *args], project).stdout


def would_run(project: Path) -> list[str]:
    """The stages whose own deps changed, which `dvc repro` would run (dry run: nothing is executed).

    A dry run cannot know yet whether a rerun stage's outputs change, so stages that
    depend only on those do not appear.
    """
    result = dvc(["repro", "--dry"], project)
    said = result.stdout + result.stderr
    return re.findall(r"Running stage '(\w+)'", said)


def out_md5s(lock_text: str) -> dict[str, str]:
    """path -> md5 of every output recorded in a dvc.lock."""
    lock = yaml.safe_load(lock_text)
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def set_param(project: Path, section: str, key: str, value) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project after one `dvc repro`, committed (dvc.lock, metrics, reports)."""
    project = make_project(tmp_path_factory.mktemp("repro") / "project")
    dvc(["repro"], project)
    git(["add", "-A"], project)
    git(["commit", "-q", "-m", "reproduced"], project)
    return project


def test_a_forced_rerun_gives_a_byte_identical_lock(reproduced: Path) -> None:
    before = (reproduced / "dvc.lock").read_text()
    assert len(out_md5s(before)) >= 12
    # A cold rerun: also drop the Optuna study and resume checkpoints, so search retrains its trials.
    shutil.rmtree(reproduced / ".trainlab", ignore_errors=True)
    said = said_by(dvc(["repro", "-f"], reproduced))
    assert re.findall(r"Running stage '(\w+)'", said) == list(STAGES)
    after = (reproduced / "dvc.lock").read_text()
    assert out_md5s(after) == out_md5s(before)   # every model file, report and metric
    assert after == before
    assert git(["status", "--porcelain"], reproduced) == ""


def test_only_what_can_change_a_result_reruns_a_stage(reproduced: Path) -> None:
    assert would_run(reproduced) == []
    # Tracking settings are read at run time but change no output.
    set_param(reproduced, "tracking", "experiment", "renamed")
    assert would_run(reproduced) == []
    git(["checkout", "params.yaml"], reproduced)
    # Bytecode next to the sources is not part of any hash (.dvcignore).
    cache = reproduced / "src/trainlab/diagnose/__pycache__"
    cache.mkdir()
    (cache / "core.cpython-311.pyc").write_bytes(b"\x00" * 64)
    assert json.loads(dvc(["status", "--json"], reproduced).stdout) == {}
    shutil.rmtree(cache)
    # Code reruns exactly the stages that import it.
    ensemble_py = reproduced / "src/trainlab/ensemble/combine.py"
    ensemble_py.write_text(ensemble_py.read_text() + "\n# an edit\n")
    assert would_run(reproduced) == ["ensemble", "evaluate"]
    git(["checkout", "src/trainlab/ensemble/combine.py"], reproduced)
    assert would_run(reproduced) == []


def test_a_clone_pulls_every_output_and_reruns_nothing(reproduced: Path, tmp_path: Path) -> None:
    remote = tmp_path / "dvc-remote"
    dvc(["remote", "add", "-d", "shared", str(remote)], reproduced)
    git(["add", ".dvc/config"], reproduced)
    git(["commit", "-q", "-m", "DVC remote"], reproduced)
    dvc(["push"], reproduced)
    soft_vote = (reproduced / "dvc.lock").read_text()
    # A later commit with other params, pushed too.
    set_param(reproduced, "ensemble", "method", "hard_vote")
    said = said_by(dvc(["repro"], reproduced))
    assert re.findall(r"Running stage '(\w+)'", said) == ["ensemble", "evaluate"]
    git(["commit", "-q", "-am", "hard vote"], reproduced)
    dvc(["push"], reproduced)
    hard_vote = (reproduced / "dvc.lock").read_text()
    assert out_md5s(hard_vote)["models/ensemble.pt"] != out_md5s(soft_vote)["models/ensemble.pt"]

    # Going back to the earlier params on this machine: ensemble's outputs come from the
    # run-cache. DVC records no run of a stage with a `cache: false` output other than
    # metrics/plots (evaluate's artifacts folder), so evaluate reruns, to the same bytes.
    git(["checkout", "HEAD~1", "--", "params.yaml"], reproduced)
    said = said_by(dvc(["repro"], reproduced))
    assert re.findall(r"Stage '(\w+)' is cached - skipping run", said) == ["ensemble"]
    assert re.findall(r"Running stage '(\w+)'", said) == ["evaluate"]
    assert (reproduced / "dvc.lock").read_text() == soft_vote
    git(["checkout", "HEAD", "--", "."], reproduced)
    dvc(["checkout"], reproduced)

    # A teammate: clone, pull, and nothing is left to run.
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(reproduced), str(clone)], tmp_path)
    dvc(["pull"], clone)
    assert json.loads(dvc(["status", "--json"], clone).stdout) == {}
    said = said_by(dvc(["repro"], clone))
    assert "Running stage" not in said, said
    assert sorted(re.findall(r"Stage '(\w+)' didn't change, skipping", said)) == sorted(STAGES)
    assert git(["status", "--porcelain"], clone) == ""   # dvc.lock and the reports untouched
    assert (clone / "dvc.lock").read_text() == hard_vote

    # ... and back at the earlier commit, its outputs come from the remote, not from training.
    git(["checkout", "-q", "HEAD~1"], clone)
    dvc(["pull"], clone)
    assert json.loads(dvc(["status", "--json"], clone).stdout) == {}
    assert would_run(clone) == []
