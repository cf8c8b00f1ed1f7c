"""Processes and signals: whether a process recorded by an earlier stage (in an MLflow tag or a
trial attribute) still runs, holding Ctrl-C/SIGTERM while a write must complete, and
remembering a Ctrl-C that Python lost."""

import fcntl
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def pid_alive(pid: int) -> bool:
    """True if `pid` exists on this host (a PermissionError still means it exists)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# The signals that raised KeyboardInterrupt in this process (through `interrupt`). Python runs
# a signal handler in whatever code is executing, finalizers (__del__, weakref callbacks, the
# garbage collector's) included, and an exception raised in a finalizer is printed as
# "Exception ignored in ..." and dropped: a Ctrl-C that landed there was lost, and evaluate
# went on to register a version, move the champion alias and exit 0 (issue 30). The latch
# keeps it; the points of no return (a registry write, the command's success) check it.
_RECEIVED: list[int] = []
# Set once the command made its last lasting change (evaluate's registry write): a Ctrl-C
# after it is too late to undo anything, so the command finishes as it succeeded.
_COMMITTED: list[bool] = []


# How soon a signal that landed inside an import is delivered again (`interrupt`).
REDELIVER_S = 0.05


def interrupt(signum: int, frame) -> None:
    """The Ctrl-C / SIGTERM handler of a trainlab command: latch the signal, raise KeyboardInterrupt
    (unless the command already committed its work: then it finishes).

    Not inside an import: a KeyboardInterrupt raised in importlib's own frames can leave its
    global import lock held, and every later import in any thread then waits forever (seen in
    CI: MLflow's system-metrics thread importing while evaluate's Ctrl-C landed in an import, and
    the run's end waiting for that thread). There the signal is sent again a moment later, until
    it lands outside the import machinery."""
    if _COMMITTED:
        return
    _RECEIVED.append(signum)
    if _importing(frame):
        timer = threading.Timer(REDELIVER_S, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()
        return
    raise KeyboardInterrupt(f"signal {signum}")


def _importing(frame) -> bool:
    """Whether the interrupted code runs inside an import (a frame of importlib's bootstrap)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def quiet_lost_interrupts(default: Callable) -> Callable:
    """A sys.unraisablehook that keeps quiet about a latched Ctrl-C a finalizer dropped.

    Python reports it as "Exception ignored in <a weakref callback>" with a traceback (seen:
    SQLAlchemy's class registry, 3.8 s into evaluate); the latch already has it, and the
    command ends with its own one line. Anything else goes to `default`.
    """
    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and _RECEIVED:
            return
        default(unraisable)
    return hook


def commit() -> None:
    """Mark the point of no return: from here on Ctrl-C and SIGTERM let the command finish."""
    _COMMITTED.append(True)


def interrupted() -> bool:
    """Whether a Ctrl-C or SIGTERM reached this process, even one whose KeyboardInterrupt was lost."""
    return bool(_RECEIVED)


def caused_by_interrupt(err: BaseException) -> bool:
    """Whether `err` is a Ctrl-C/SIGTERM's KeyboardInterrupt, or an error raised while one was
    being handled: Optuna's journal-file lock, interrupted between unlinking its lock file and
    returning, unlinks the file again in its handler and raises FileNotFoundError instead (a
    two-worker search interrupted in CI lost a trial's slot to it). Also true once this process
    latched a signal (`interrupt`)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        seen.add(id(err))
        err = err.__context__
    return interrupted()


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt again if a signal reached this process: before a point of no return."""
    if _RECEIVED:
        raise KeyboardInterrupt(f"signal {_RECEIVED[0]}")


@contextmanager
def signals_held(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[list[int]]:
    """Hold Ctrl-C and SIGTERM until the block is done, then deliver them (main thread only).

    The block gets the list of signals held so far, to give up a step that must not start
    once the user asked to stop (it stays empty off the main thread, where none is held).
    """
    held: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield held
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in signals}
    try:
        yield held
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if held:
            handler = previous[held[0]]
            if callable(handler):
                handler(held[0], None)       # Python's handler: raises KeyboardInterrupt
            elif handler != signal.SIG_IGN:
                os.kill(os.getpid(), held[0])


@contextmanager
def host_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between the processes of this host (flock; released if the holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


PR_SET_PDEATHSIG = 1   # prctl option (linux/prctl.h)


def die_with_parent() -> None:
    """In a child process: SIGKILL it when its parent dies, however the parent dies (Linux;
    elsewhere a no-op), so no fold worker or DDP rank is left orphaned."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
