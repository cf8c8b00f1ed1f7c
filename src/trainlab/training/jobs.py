"""Cross-validation folds trained side by side: forked children take some folds, this process the rest.

A fold of a small dataset trains on one thread (`engine.runtime.tiny_steps`): its steps
are too small to split over cores. With `trainer.threads: 2` the second core would idle
through all k folds, so the folds are shared out over that many processes instead. Every
fold fit seeds itself and runs on one thread either way, so the results are bit-identical
to training the folds one after another (tests/test_own_data.py).

The children are forks of this process: they inherit the imported modules, the data and
the model factory (a closure, which a spawned process could not unpickle). Each trains its
folds, sends every result back through a pipe and leaves through multiprocessing's
`os._exit`, so none of this process's exit handlers (its MLflow run) runs twice. This
process trains fold 0 first: the fold a search trial's pruner watches. If anything here
raises (pruned, interrupted, diverged), the children are killed; the checkpoints their
folds saved stay behind as resume points, like the serial fold that was interrupted.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, TypeVar

from trainlab.errors import UserError
from trainlab.processes import die_with_parent

T = TypeVar("T")


def run_shared(jobs: list[Callable[[], T]], processes: int, on_result: Callable[[int, T], None]) -> list[T]:
    """Run `jobs` over `processes` processes (this one included); results in job order.

    Job k runs in process k % processes (this process is 0). `on_result(k, result)` is
    called in job order, as soon as job k and every job before it have finished.
    """
    processes = max(1, min(processes, len(jobs)))
    children = [_Child(jobs, range(p, len(jobs), processes)) for p in range(1, processes)]
    results: dict[int, T] = {}
    shown = 0
    try:
        for k in range(0, len(jobs), processes):
            results[k] = jobs[k]()
            _collect(children, results, block=False)
            shown = _show(results, shown, on_result)
        while len(results) < len(jobs):
            _collect(children, results, block=True)
            shown = _show(results, shown, on_result)
    finally:
        for child in children:
            child.stop()
    return [results[k] for k in range(len(jobs))]


def _show(results: dict[int, Any], shown: int, on_result: Callable[[int, Any], None]) -> int:
    while shown in results:
        on_result(shown, results[shown])
        shown += 1
    return shown


def _collect(children: list["_Child"], results: dict[int, Any], block: bool) -> None:
    """Receive the results the children have sent (waiting for at least one if `block`)."""
    pending = [c.conn for c in children if not c.done]
    ready = wait(pending) if block else [conn for conn in pending if conn.poll()]
    for child in children:
        while child.conn in ready and not child.done and child.conn.poll():
            k, ok, value = child.receive()
            if not ok:
                raise value
            results[k] = value


class _Child:
    """A forked process that runs some of the jobs and sends (k, ok, result or error) for each."""

    def __init__(self, jobs: list[Callable[[], Any]], ks: range):
        self.expected = len(ks)
        self.received = 0
        context = multiprocessing.get_context("fork")
        self.conn, child_end = context.Pipe(duplex=False)
        self.process = context.Process(target=_child_main, args=(jobs, ks, child_end), daemon=True)
        self.process.start()
        child_end.close()

    @property
    def done(self) -> bool:
        return self.received >= self.expected

    def receive(self) -> tuple[int, bool, Any]:
        try:
            message = self.conn.recv()
        except EOFError:
            self.process.join(timeout=5)
            raise UserError(f"a cross-validation fold process ended without its result (exit code "
                            f"{self.process.exitcode}); rerun to resume from the folds' checkpoints") from None
        except Exception as err:   # an error object that pickles but cannot be rebuilt here
            raise UserError(f"a cross-validation fold failed and its error could not be passed back ({err})") from None
        self.received += 1
        return message

    def stop(self) -> None:
        if self.process.is_alive() and not self.done:
            self.process.kill()
        self.process.join()
        self.conn.close()


def _child_main(jobs: list[Callable[[], Any]], ks: range, conn: Connection) -> None:
    die_with_parent()
    for k in ks:
        try:
            result = jobs[k]()
        except BaseException as err:   # KeyboardInterrupt too: the parent re-raises it
            try:
                conn.send((k, False, err))
            except Exception:   # an error that cannot be pickled: its text
                conn.send((k, False, UserError(f"{type(err).__name__}: {err}")))
            return
        conn.send((k, True, result))
