"""Processes and signals: whether a process recorded by an earlier stage (in an MLflow tag or a
trial attribute) still runs, and holding Ctrl-C/SIGTERM while a write must complete."""

import fcntl
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


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


@contextmanager
def signals_held(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done, then deliver them (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in signals}
    try:
        yield
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
