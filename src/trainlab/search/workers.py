"""Local worker processes of one search, which never outlive the `trainlab search` that started them."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time

import optuna

from trainlab.config import Params
from trainlab.errors import UserError

PR_SET_PDEATHSIG = 1   # linux/prctl.h
WATCH_INTERVAL_S = 1.0


def run_workers(params: Params, study_name: str, parent_run_id: str | None, workers: int, threads: int) -> None:
    """Run the study in `workers` spawned processes and wait for all of them."""
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_worker_main, args=(params, study_name, parent_run_id, threads, os.getpid()))
             for _ in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed:
        raise UserError(f"search: {len(failed)} worker(s) failed (exit codes {failed}); see their messages above")


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process as soon as `parent_pid` (its parent) is gone.

    Without it, a `trainlab search` killed with SIGKILL leaves its workers training as
    orphans: they keep running trials while a rerun starts new ones, and the study ends
    past its budget. Linux delivers the signal itself (PR_SET_PDEATHSIG); elsewhere, and
    as a fallback, a thread polls the parent pid. A trial killed this way is re-queued by
    the next search, like one killed with its whole process group.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:   # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="die-with-parent", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCH_INTERVAL_S)
    os.kill(os.getpid(), signal.SIGKILL)


def _worker_main(params: Params, study_name: str, parent_run_id: str | None, threads: int, parent_pid: int) -> None:
    die_with_parent(parent_pid)
    import torch

    from trainlab.search.loop import work

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)   # a spawned process starts at INFO
    try:
        work(params, study_name, parent_run_id, threads)
    except UserError as err:
        raise SystemExit(f"search worker: {err}") from None
