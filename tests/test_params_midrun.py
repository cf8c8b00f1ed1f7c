"""params.yaml edited while `dvc repro` runs (issue 30, item 1), with the real dvc CLI.

finetune trained with lr 0.002 (MLflow said 0.002) while dvc.lock recorded 0.009, the value
params.yaml held when the command exited: DVC reads the file for a stage's lock entry only
then, so `dvc status` said everything was up to date. Now a stage reads params.yaml again
just before it writes anything and stops on a change (nothing written, nothing recorded);
an edit that lands after that last read is caught by the next stage and by `trainlab verify`,
which compare the params each stage recorded in its outputs with its dvc.lock entry. An edit
of a stage that already ran is legitimate: `dvc status` reports it.

A stage is paused at an exact moment with the engine's test hook (SIGSTOP to itself after
optimizer step N), so the edit never races the stage's end. The params are spelled as
people write them and DVC does not write them back (`3e-3`, an int `0` for a float, `0.10`):
records and dvc.lock still agree.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psutil
import pytest
import yaml

from trainlab.testing import BIN, clean_env, copy_project, make_project, run, small_params, trainlab

DVC = str(BIN / "dvc")
# YAML spellings that differ from the ones DVC writes into dvc.lock.
SPELLED = {"pretrain.optimizer.lr": "3e-3", "pretrain.optimizer.weight_decay": "0",
           "pretrain.optimizer.eps": "1.0e-8", "data.val_fraction": "0.10"}


def spelled_params() -> str:
    """The shrunk params.yaml, with the SPELLED keys written exactly as given."""
    params = small_params(**{key.replace(".", "__"): f"@{key}@" for key in SPELLED})
    text = yaml.safe_dump(params, sort_keys=False)
    for key, spelling in SPELLED.items():
        text = text.replace(f"'@{key}@'", spelling)
    return text


def edit(project: Path, line: str, new: str) -> None:
    """Replace the one params.yaml line that reads `line` (indentation aside)."""
    path = project / "params.yaml"
    lines = path.read_text().splitlines(keepends=True)
    found = [i for i, text in enumerate(lines) if text.strip() == line]
    assert len(found) == 1, f"{line!r} in params.yaml {len(found)} times"
    lines[found[0]] = lines[found[0]].replace(line, new)
    path.write_text("".join(lines))


@contextmanager
def paused(cmd: list[str], project: Path, step: int) -> Iterator[subprocess.Popen]:
    """Run `cmd`; yield once the training stage under it has stopped itself after `step`;
    let it go on when the block ends."""
    log = (project / "run.log").open("w")
    proc = subprocess.Popen(cmd, cwd=project, env=clean_env(TRAINLAB_TEST_SIGNAL_AT_STEP=f"{step}:SIGSTOP"),
                            stdout=log, stderr=subprocess.STDOUT)
    stopped = None
    deadline = time.monotonic() + 600
    while stopped is None:
        assert proc.poll() is None, f"ended before step {step}:\n{(project / 'run.log').read_text()[-3000:]}"
        assert time.monotonic() < deadline, "never stopped"
        stopped = next((p for p in descendants(proc.pid) if status_of(p) == psutil.STATUS_STOPPED), None)
        time.sleep(0.05)
    try:
        yield proc
    finally:
        stopped.send_signal(signal.SIGCONT)
        proc.wait(timeout=600)
        log.close()


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def status_of(process: psutil.Process) -> str | None:
    try:
        return process.status()
    except psutil.NoSuchProcess:   # one that ended while we looked (zombies included)
        return None


def said(project: Path) -> str:
    return (project / "run.log").read_text()


def status(project: Path) -> dict:
    """`dvc status` of prepare and pretrain (the stages these projects run; the others never ran)."""
    import json

    found = json.loads(run([DVC, "status", "--json"], project).stdout)
    return {stage: changes for stage, changes in found.items() if stage in ("prepare", "pretrain")}


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dvc repro pretrain` on the spelled params, data.val_fraction (prepare's alone)
    edited while pretrain trained: legitimate, pretrain does not read it."""
    project = make_project(tmp_path_factory.mktemp("midrun") / "project")
    (project / "params.yaml").write_text(spelled_params())
    with paused([DVC, "repro", "pretrain"], project, step=2) as proc:
        edit(project, "val_fraction: 0.10", "val_fraction: 0.2")
    assert proc.returncode == 0, said(project)[-3000:]
    return project


def clean_copy(reproduced: Path, target: Path) -> Path:
    """The reproduced project with its params as dvc.lock records them: `dvc status` finds nothing."""
    project = copy_project(reproduced, target)
    edit(project, "val_fraction: 0.2", "val_fraction: 0.10")
    assert status(project) == {}
    return project


def test_an_edit_while_a_stage_trains_stops_it_with_nothing_written(reproduced: Path, tmp_path: Path) -> None:
    project = clean_copy(reproduced, tmp_path / "project")
    lock = (project / "dvc.lock").read_text()
    with paused([DVC, "repro", "--force", "--single-item", "pretrain"], project, step=2) as proc:
        edit(project, "lr: 3e-3", "lr: 9e-3")
    output = said(project)
    assert proc.returncode != 0, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert errors == ["error: params.yaml changed while pretrain ran (pretrain.optimizer.lr: 0.003 -> 0.009); "
                      "nothing written; rerun `dvc repro`"], output[-3000:]
    assert "Traceback" not in output
    # DVC removed the outputs before the run; the stage wrote none of them, and DVC recorded nothing.
    for out in ("models/pretrained.pt", "models/manifests/pretrain.json", "reports/pretrain/metrics.json"):
        assert not (project / out).exists(), out
    assert (project / "dvc.lock").read_text() == lock
    assert list(status(project)) == ["pretrain"]   # so the next `dvc repro` reruns it
    # MLflow has the lr it trained with, on a run that failed.
    with sqlite3.connect(project / "mlflow.db") as db:
        last = db.execute("SELECT r.status, p.value FROM runs r JOIN params p ON p.run_uuid = r.run_uuid "
                          "WHERE p.key = 'pretrain.optimizer.lr' ORDER BY r.start_time DESC LIMIT 1").fetchone()
    assert last == ("FAILED", "0.003")


def test_a_record_dvc_lock_contradicts_stops_verify_and_the_next_stage(reproduced: Path, tmp_path: Path) -> None:
    # What an edit after pretrain's last check leaves: dvc.lock (and params.yaml) say 0.009,
    # the model was trained with 0.003, and DVC sees nothing to do.
    project = clean_copy(reproduced, tmp_path / "project")
    edit(project, "lr: 3e-3", "lr: 9e-3")
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    lock["stages"]["pretrain"]["params"]["params.yaml"]["pretrain"]["optimizer"]["lr"] = 0.009
    (project / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    assert status(project) == {}
    wrong = ("ran with pretrain.optimizer.lr: 0.003, but dvc.lock records 0.009; "
             "rerun it with `dvc repro -f -s pretrain`, then `dvc repro`")
    verified = trainlab(["verify"], project, check=False)
    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert verified.stdout.splitlines()[:2] == ["prepare: ok (data/prepared/manifest.json matches dvc.lock)",
                                                f"pretrain: {wrong}"]
    finetune = trainlab(["finetune"], project, check=False)
    assert finetune.returncode == 2
    assert finetune.stderr.strip().splitlines() == [f"error: pretrain {wrong}"]
    assert not (project / "models/finetuned.pt").exists()
    # What the line says to do brings dvc.lock and the outputs together again.
    run([DVC, "repro", "-f", "-s", "pretrain"], project)
    assert trainlab(["verify"], project).stdout.splitlines()[1] == \
        "pretrain: ok (models/manifests/pretrain.json matches dvc.lock)"


def test_an_edit_of_an_earlier_stage_s_params_is_left_to_dvc_status(reproduced: Path) -> None:
    # Made while pretrain trained: prepare had run with 0.10 and dvc.lock says so.
    assert status(reproduced) == {"prepare": [{"changed deps": {"params.yaml": {"data": "modified"}}}]}
    verified = trainlab(["verify"], reproduced)
    assert verified.stdout.splitlines() == [
        "prepare: ok (data/prepared/manifest.json matches dvc.lock)",
        "pretrain: ok (models/manifests/pretrain.json matches dvc.lock)",
        *(f"{stage}: not checked: no entry in dvc.lock" for stage in ("finetune", "search", "ensemble", "evaluate"))]
    # Equal as values, though spelled otherwise: what the stages recorded is what dvc.lock holds.
    lock = (reproduced / "dvc.lock").read_text()
    assert "lr: 3e-3" in (reproduced / "params.yaml").read_text() and "lr: 0.003" in lock and "eps: 1e-08" in lock
