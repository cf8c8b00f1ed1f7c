"""Local worker processes of one search, which never outlive the `trainlab search` that started them.

The workers are forks of one fork server that imported, once, what a trial needs (torch,
Optuna, MLflow, the trial code): measured with bench/worker_startup.py (2 workers, 2 busy
cores), all workers were ready after 6.5 s this way against 16.5 s for spawned workers that
each import everything again. Forking `trainlab search` itself was faster still (0.9 s) but
would hand each worker the parent's open MLflow/SQLAlchemy connections and its active run;
the fork server is a fresh interpreter with no connections, so nothing is shared but code.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import Callable

from trainlab.config import Params
from trainlab.errors import ResourceUnavailable, UserError

# Everything a worker's first trial imports (trainlab.tracking imports MLflow lazily), the
# lazy imports included: torch._dynamo (the optimizer's constructor imports it, 1.2 s) and
# MLflow's sqlite store (0.8 s). Imported here once, not in every worker's first trial.
PRELOAD = ["torch", "torch._dynamo", "optuna", "sqlalchemy", "sqlalchemy.dialects.sqlite", "mlflow",
           "mlflow.tracking", "mlflow.entities", "mlflow.store.tracking.sqlalchemy_store",
           "trainlab.search.loop", "trainlab.search.trials", "trainlab.search.workers",
           "trainlab.search.server_exit"]
# The write ends of the workers' lifelines: they must stay open as long as this process
# lives (a garbage-collected Connection closes its end and would kill its worker).
_LIFELINES: list[Connection] = []


def worker_context() -> multiprocessing.context.ForkServerContext:
    """The multiprocessing context of search workers: forks of a fork server that preloaded PRELOAD."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def start_worker_server(workers: int) -> None:
    """With several workers, start the fork server now: its imports then overlap the caller's own
    start-up (MLflow's parent run, the study) instead of delaying the first trial."""
    if workers > 1:
        worker_context()
        multiprocessing.forkserver.ensure_running()


def run_workers(params: Params, study_name: str, parent_run_id: str | None, workers: int, threads: int,
                while_waiting: Callable[[], None] | None = None) -> None:
    """Run the study in `workers` worker processes and wait for all of them.

    `while_waiting` runs in a thread of this otherwise idle process once the workers are
    started, and has finished when this returns (this process imports nothing meanwhile).
    """
    context = worker_context()
    procs, readers = [], []
    for _ in range(workers):
        reader, writer = context.Pipe(duplex=False)
        procs.append(context.Process(target=_worker_main, args=(params, study_name, parent_run_id, threads, reader)))
        readers.append(reader)
        _LIFELINES.append(writer)
    for proc in procs:
        proc.start()
    for reader in readers:   # the workers hold the read ends now; this process only the write ends
        reader.close()
    helper = threading.Thread(target=while_waiting, name="while-waiting", daemon=True) if while_waiting else None
    if helper is not None:
        helper.start()
    # On Ctrl-C the KeyboardInterrupt leaves here with the lifelines open: multiprocessing's exit
    # handler then waits for the workers to re-queue their trials, as it did for spawned ones.
    for proc in procs:
        proc.join()
    while _LIFELINES:
        _LIFELINES.pop().close()
    if helper is not None:
        helper.join()
    failed = [p.exitcode for p in procs if p.exitcode]
    if ResourceUnavailable.exit_code in failed:   # a fault of the machine: its trials are re-queued
        raise ResourceUnavailable(f"search: {failed.count(ResourceUnavailable.exit_code)} worker(s) stopped by a "
                                  f"fault of the machine (see their messages above); their trials run again "
                                  f"when the search is rerun")
    if failed:
        raise UserError(f"search: {len(failed)} worker(s) failed (exit codes {failed}); see their messages above")


def die_with_parent(lifeline: Connection) -> None:
    """SIGKILL this process as soon as the `trainlab search` that started it is gone.

    Without it, a `trainlab search` killed with SIGKILL leaves its workers training as
    orphans: they keep running trials while a rerun starts new ones, and the study ends
    past its budget. The worker's parent is the fork server, not the search, so the signal
    is a pipe whose only write end the search holds: the kernel closes it when the search
    dies, however it dies, and the read here returns at once. A trial killed this way is
    re-queued by the next search, like one killed with its whole process group.
    """
    threading.Thread(target=_watch_lifeline, args=(lifeline,), name="die-with-parent", daemon=True).start()


def _watch_lifeline(lifeline: Connection) -> None:
    try:
        lifeline.recv_bytes()   # nothing is ever sent: this returns only at end of file
    except (EOFError, OSError):
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def _worker_main(params: Params, study_name: str, parent_run_id: str | None, threads: int,
                 lifeline: Connection) -> None:
    die_with_parent(lifeline)
    import optuna
    import torch

    from trainlab.search.loop import work

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)   # a fresh interpreter's forks start at INFO
    try:
        work(params, study_name, parent_run_id, threads)
    except UserError as err:
        print(f"search worker: {err}", file=sys.stderr, flush=True)
        raise SystemExit(err.exit_code) from None
