"""Search worker processes die with `trainlab search`, and the study keeps its budget.

SIGKILL reaches only the search process itself (not its process group, as a shell's
Ctrl-C or DVC would): its two workers must not go on training as orphans, and the
resumed search must end with exactly n_trials counted trials.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from trainlab.testing import BIN, clean_env, trainlab

from helpers.search import (by_slot, counted, killed, metric_steps, metrics, mlflow_runs, new_project, only_study,
                            search_params, studies, wait_for)


EPOCHS = 40   # per trial: long enough that neither worker finishes one before the interrupt


def gone(pid: int) -> bool:
    """The process has exited (a zombie no one reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def running_trial_pids(project: Path) -> set[int]:
    # The journal file exists a moment before the search writes its study into it.
    if not (project / ".trainlab/search/study.journal").is_file() or not studies(project):
        return set()
    return {int(t.user_attrs["pid"]) for t in only_study(project)
            if t.state == TrialState.RUNNING and "pid" in t.user_attrs}


def start_two_worker_search(prepared_project: Path, tmp_path: Path, n_trials: int):
    """`trainlab search` with 2 workers in its own process group: (project, process, log file)."""
    params = search_params(search__sampler="random", search__n_trials=n_trials, search__workers=2,
                           search__epochs=EPOCHS, search__pruner="none", finetune__early_stopping__enabled=False)
    project = new_project(prepared_project, tmp_path / "project", params)
    log = (tmp_path / "search.log").open("w")
    proc = subprocess.Popen([str(BIN / "trainlab"), "search"], cwd=project, env=clean_env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    return project, proc, log


@pytest.mark.slow
def test_sigkill_of_the_search_kills_its_workers_and_the_resume_keeps_the_budget(prepared_project: Path,
                                                                                 tmp_path: Path) -> None:
    n_trials = 4
    project, proc, log = start_two_worker_search(prepared_project, tmp_path, n_trials)
    workers: set[int] = set()
    try:
        wait_for(lambda: len(running_trial_pids(project)) == 2, 600, "both workers to run a trial", proc)
        workers = running_trial_pids(project)
        assert proc.pid not in workers
        os.kill(proc.pid, signal.SIGKILL)   # the parent only, not its process group
        proc.wait(timeout=60)
        deadline = time.monotonic() + 15
        while not all(gone(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        orphans = [pid for pid in workers if not gone(pid)]
        assert orphans == [], f"workers {orphans} outlived the killed search"
    finally:
        for pid in [proc.pid, *workers]:   # never leave a process behind, whatever failed
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=60)
        log.close()
    interrupted = only_study(project)
    assert {t.state for t in interrupted if not counted([t])} <= {TrialState.RUNNING}

    result = trainlab(["search"], project)
    trials = only_study(project)
    assert sorted(by_slot(trials)) == list(range(n_trials))   # each slot counted exactly once
    assert len(counted(trials)) == n_trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == n_trials, result.stderr[-3000:]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sorted(int(t.user_attrs["slot"]) for t in killed(trials)) == sorted(
        int(t.user_attrs["slot"]) for t in interrupted if t.state == TrialState.RUNNING)
    found = metrics(project)
    assert found["trials/complete"] == n_trials and found["trials/killed_and_retried"] == len(killed(trials)) == 2
    # Each counted trial's child run holds every epoch's val/loss, the two resumed ones included:
    # their points from before the kill come from the checkpoint's curves (backfill).
    finished = [r for r in mlflow_runs(project) if "optuna.slot" in r.data.tags and r.info.status == "FINISHED"]
    assert sorted(int(r.data.tags["optuna.slot"]) for r in finished) == list(range(n_trials))
    epochs = list(range(1, EPOCHS + 1))
    assert all(metric_steps(project, r.info.run_id, "val/loss") == epochs for r in finished)


def group_gone(pgid: int) -> bool:
    """No live process is left in the process group (zombies count as gone)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return False
    return True


@pytest.mark.slow
def test_ctrl_c_requeues_both_workers_trials_and_leaves_no_process(prepared_project: Path, tmp_path: Path) -> None:
    # Ctrl-C in a terminal signals the whole process group: the search, its fork server and
    # its workers. Each worker must re-queue its running trial before anything exits.
    n_trials = 4
    project, proc, log = start_two_worker_search(prepared_project, tmp_path, n_trials)
    try:
        wait_for(lambda: len(running_trial_pids(project)) == 2, 600, "both workers to run a trial", proc)
        running = {t.number for t in only_study(project) if t.state == TrialState.RUNNING}
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 130
        deadline = time.monotonic() + 15
        while not group_gone(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert group_gone(proc.pid), "a worker or the fork server outlived the interrupted search"
    finally:
        if not group_gone(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    trials = only_study(project)
    interrupted = [t for t in trials if t.number in running]
    assert [(t.state, t.user_attrs.get("killed")) for t in interrupted] == [(TrialState.FAIL, True)] * 2
    assert sorted(t.user_attrs["slot"] for t in trials if t.state == TrialState.WAITING) == sorted(
        t.user_attrs["slot"] for t in interrupted)

    trainlab(["search"], project)
    trials = only_study(project)
    assert sorted(by_slot(trials)) == list(range(n_trials)) and len(counted(trials)) == n_trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


MARKER_MODULE = """
import atexit, os
from pathlib import Path
HERE = Path(__file__).parent
(HERE / "server.pid").write_text(str(os.getpid()))
atexit.register(lambda: (HERE / "torn-down").write_text("the fork server ran its other atexit handlers"))
"""

START_SERVER = """
import multiprocessing, os, sys
context = multiprocessing.get_context("forkserver")
context.set_forkserver_preload(sys.argv[1:])
proc = context.Process(target=os.getpid)
proc.start()
proc.join()
sys.exit(proc.exitcode)
"""


@pytest.mark.parametrize("skip_teardown", [True, False])
def test_the_fork_server_ends_without_its_teardown(tmp_path: Path, skip_teardown: bool) -> None:
    """With trainlab.search.server_exit preloaded last, the fork server's exit skips its
    teardown (freeing torch and MLflow took it ~2 s, holding the search's stdout open)."""
    (tmp_path / "marker.py").write_text(MARKER_MODULE)
    preload = ["marker", *(["trainlab.search.server_exit"] if skip_teardown else [])]
    # The fork server finds the marker through PYTHONPATH; this process never imports it.
    done = subprocess.run([str(BIN / "python"), "-c", START_SERVER, *preload], capture_output=True, text=True,
                          timeout=120, env=clean_env(PYTHONPATH=str(tmp_path)))
    assert done.returncode == 0, done.stderr
    server = int((tmp_path / "server.pid").read_text())
    deadline = time.monotonic() + 60
    while not gone(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(server)
    assert (tmp_path / "torn-down").exists() == (not skip_teardown)


def test_server_exit_does_nothing_outside_the_fork_server(tmp_path: Path) -> None:
    script = ("import atexit, sys; atexit.register(lambda: print('handlers ran')); "
              "import trainlab.search.server_exit")
    done = subprocess.run([str(BIN / "python"), "-c", script], capture_output=True, text=True, timeout=120,
                          env=clean_env())
    assert (done.returncode, done.stdout) == (0, "handlers ran\n"), done.stderr
