"""Faults of the machine, not of the input: a tracking store that cannot be opened, a
missing database driver, a damaged mlflow.db, an output folder that cannot be written, a
disk that fills up mid-training; and the hygiene of what a stage writes (permissions,
temporaries a SIGKILL leaves, where DDP listens).

The promise: one line naming the resource, exit code 4 (ResourceUnavailable), the MLflow
run FAILED (never left RUNNING to be marked KILLED later), nothing half-written. Read-only
folders and a full disk are real: a bind mount remounted read-only and a small tmpfs,
each inside a private mount namespace (`unshare --mount`, which needs root or user
namespaces; CI runs as root), so nothing outside the test sees them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from trainlab.io import atomic_path, staging_dir, write_text
from trainlab.testing import BIN, clean_env, copy_project, small_params, trainlab, write_params

from helpers.console import Outcome, error_line
from helpers.disk import filled_during, in_mount_namespace
from helpers.tracking import label

RESOURCE = 4   # ResourceUnavailable.exit_code


def stage(project: Path, *args: str, **env: str) -> Outcome:
    done = trainlab(["pretrain", *args], project, check=False, **env)
    return Outcome(done.returncode, done.stdout, done.stderr)


def statuses(db: Path) -> list[tuple[str, str]]:
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("trainlab")
    return sorted((label(r), r.info.status) for r in client.search_runs([experiment.experiment_id]))


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.tmp") if ".git" not in p.parts]


@pytest.fixture
def fresh(prepared_project: Path, tmp_path: Path) -> Path:
    """A copy of the prepared project without its pretrained model (pretrain has work to do)."""
    project = copy_project(prepared_project, tmp_path / "project")
    (project / "models/pretrained.pt").unlink()
    return project


# ----------------------------------------------------------------------- the tracking store
def test_a_store_path_that_cannot_be_created(fresh: Path) -> None:
    (fresh / "blocker").write_text("a file where the store's folder should be\n")
    uri = f"sqlite:///{fresh}/blocker/mlflow.db"
    line = error_line(stage(fresh, MLFLOW_TRACKING_URI=uri), RESOURCE)
    assert line == f"error: tracking store {uri}: {fresh}/blocker is a file where a folder is needed"
    assert not (fresh / "models/pretrained.pt").exists()


def test_a_database_driver_that_is_not_installed(fresh: Path) -> None:
    # SQLAlchemy's default driver for postgresql:// is psycopg (3); this environment has only psycopg2.
    assert importlib.util.find_spec("psycopg") is None, "precondition: psycopg must not be installed"
    line = error_line(stage(fresh, MLFLOW_TRACKING_URI="postgresql://me:secret@127.0.0.1:9/db"), RESOURCE)
    assert line.startswith("error: tracking store postgresql://me:***@127.0.0.1:9/db: the Python package "
                           "'psycopg' this URL needs is not installed (pip install psycopg[binary])"), line
    assert "secret" not in line


@pytest.mark.parametrize(("damage", "reason"), [("truncated", "database disk image is malformed"),
                                                 ("overwritten", "file is not a database")])
def test_a_damaged_mlflow_db_is_named_and_left_as_it_is(fresh: Path, damage: str, reason: str) -> None:
    db = fresh / "mlflow.db"
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"my notes\n" * 100)
    damaged = db.read_bytes()
    line = error_line(stage(fresh), RESOURCE)
    assert line == (f"error: tracking store sqlite:///{db}: {reason} (the file is damaged or was overwritten: "
                    f"move it away to start a new store, or restore it)")
    assert db.read_bytes() == damaged                      # the user's file is theirs to rescue
    assert not (fresh / "models/pretrained.pt").exists()


# ------------------------------------------------------------------------- output folders
def test_an_output_folder_blocked_by_a_file_is_found_before_training(fresh: Path) -> None:
    shutil.rmtree(fresh / "models")
    (fresh / "models").write_text("not a folder\n")
    before = statuses(fresh / "mlflow.db")
    outcome = stage(fresh)
    assert error_line(outcome, RESOURCE) == "error: models: cannot write: a file is in the way of a folder"
    assert "epoch" not in outcome.stderr                   # refused before any training
    assert statuses(fresh / "mlflow.db") == before         # no run opened, none left RUNNING


def test_a_read_only_models_folder_is_found_before_training(fresh: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    done = in_mount_namespace(
        "mount --bind models models && mount -o remount,bind,ro models || exit 90\n"
        f"trainlab pretrain > {out}/stdout.log 2> {out}/stage.log; echo $? > {out}/rc\n", fresh)
    assert done.returncode == 0, done.stderr                 # 90: the read-only mount itself failed
    said = (out / "stage.log").read_text()
    assert int((out / "rc").read_text()) == RESOURCE, said
    assert said.strip().splitlines() == ["error: models: cannot write: read-only file system"]
    # stdout: only the line saying what the stage starts, nothing claiming a result
    assert (out / "stdout.log").read_text().splitlines() == [
        "[pretrain] starting: Train on the source task, or import pretrain.from."]
    assert not (fresh / "models/pretrained.pt").exists() and temporaries(fresh) == []


# ----------------------------------------------------------------------------- a full disk
@pytest.mark.slow
def test_a_disk_that_fills_up_mid_training_fails_the_run_in_one_line(prepared_project: Path, tmp_path: Path) -> None:
    """A 64 MB tmpfs holds the project; once the first checkpoint exists, the rest of it is filled."""
    project = copy_project(prepared_project, tmp_path / "project")
    (project / "models/pretrained.pt").unlink()
    write_params(project, small_params(pretrain__epochs=8, trainer__checkpoint_every_steps=5))
    out, mnt = tmp_path / "out", tmp_path / "mnt"
    out.mkdir()
    mnt.mkdir()
    script = filled_during(project, mnt, out, "trainlab pretrain", ".trainlab/resume/pretrain.pt")
    done = in_mount_namespace(script, tmp_path)
    assert done.returncode == 0, done.stderr
    said = (out / "first.log").read_text()
    assert int((out / "first.rc").read_text()) == RESOURCE, said[-3000:]
    assert "Traceback" not in said, said[-3000:]
    last = said.strip().splitlines()[-1]
    # The checkpoint write or the store's next write meets the full disk first, whichever comes first.
    assert last.startswith("error: ") and ("no space left on the device" in last or "disk is full" in last), last
    after = out / "after"
    assert statuses(after / "mlflow.db") == [("prepare", "FINISHED"), ("pretrain", "FAILED"),
                                             ("pretrain", "FINISHED")]
    assert not (after / "models/pretrained.pt").exists()   # nothing half-written
    assert temporaries(after) == []                        # temporaries removed, and the space reserve too


# -------------------------------------------------------------------------------- hygiene
def test_outputs_get_ordinary_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a/b.txt", "x")
        with staging_dir(tmp_path / "folder") as staging:
            (staging / "f").write_text("y")
    finally:
        os.umask(old)
    assert (tmp_path / "a/b.txt").stat().st_mode & 0o777 == 0o644
    assert staging.stat().st_mode & 0o777 == 0o755


def test_prepared_data_is_world_readable(prepared_project: Path) -> None:
    prepared = prepared_project / "data/prepared"
    assert prepared.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in prepared.rglob("*") if p.is_file()} == {0o644}
    assert {p.stat().st_mode & 0o777 for p in (prepared_project / "models").rglob("*") if p.is_file()} == {0o644}


KILLED_WRITER = """
import os, signal, sys
from trainlab.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_temporary_left_by_a_killed_writer_is_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)])
    assert killed.returncode == -signal.SIGKILL
    assert len(temporaries(tmp_path)) == 1 and not target.exists()
    with atomic_path(tmp_path / "other.json") as tmp:   # a live writer's temporary of another file ...
        write_text(target, "{}\n")
        assert temporaries(tmp_path) == [tmp]           # ... is kept; the dead writer's is gone
    assert target.read_text() == "{}\n"
    assert temporaries(tmp_path) == []


# --------------------------------------------------------------------------- DDP listeners
def listening_addresses(pids: set[int]) -> set[str]:
    """Local addresses of the TCP sockets in LISTEN state that `pids` hold open."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:   # 0A: LISTEN
                found.add(fields[1].split(":")[0])
    return found


def descendants(pid: int) -> set[int]:
    children = {pid}
    for _ in range(4):
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError):
                    continue
                if parent in children:
                    children.add(int(entry.name))
    return children


@pytest.mark.slow
def test_two_devices_listen_on_loopback_only(fresh: Path) -> None:
    write_params(fresh, small_params(trainer__devices=2, pretrain__epochs=3))
    proc = subprocess.Popen([str(BIN / "trainlab"), "pretrain"], cwd=fresh, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=clean_env())
    seen: set[str] = set()
    while proc.poll() is None:
        seen |= listening_addresses(descendants(proc.pid))
        time.sleep(0.1)
    said = proc.stdout.read().decode()
    assert proc.returncode == 0, said[-3000:]
    # Hex of 127.0.0.1 as /proc/net/tcp writes it (little-endian), and ::1 / ::ffff:127.0.0.1 for tcp6.
    loopback = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}
    assert seen and seen <= loopback, seen


CTRL_C_IN_SAVE = """
import os, signal, sys, torch
from trainlab.io import torch_save
original = torch.save

def save_interrupted_midway(obj, handle):
    handle.write(b"x" * 100)               # part of the archive is out when Ctrl-C arrives
    os.kill(os.getpid(), signal.SIGINT)
    handle.seek(0)
    handle.truncate()
    original(obj, handle)

torch.save = save_interrupted_midway
try:
    torch_save({"weights": torch.arange(1000.0)}, sys.argv[1])
except KeyboardInterrupt:
    print("KeyboardInterrupt after the save")
"""


def test_ctrl_c_during_a_checkpoint_save_waits_for_it(tmp_path: Path) -> None:
    """A Ctrl-C inside torch's zip writer surfaced as its RuntimeError ("unexpected pos"),
    a traceback and exit 1; held, it arrives after the file is complete (seen in CI)."""
    import torch

    path = tmp_path / "checkpoint.pt"
    done = subprocess.run([sys.executable, "-c", CTRL_C_IN_SAVE, str(path)], capture_output=True, text=True,
                          timeout=120, env=clean_env())
    assert (done.returncode, done.stdout) == (0, "KeyboardInterrupt after the save\n"), done.stderr
    assert torch.equal(torch.load(path)["weights"], torch.arange(1000.0))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]   # no temporary left
