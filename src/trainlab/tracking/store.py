"""Opening and writing the tracking store: a lock for a fresh sqlite store, calls that
Ctrl-C cannot cut in half, disk space held back to close a run, and faults in one line.

MLflow and SQLAlchemy report store faults with long tracebacks: a database driver that is not
installed, an sqlite file in a folder that cannot be created or written, a damaged or
overwritten mlflow.db, a disk that filled up. All are faults of the machine, not of the
params: ResourceUnavailable, exit code 4. Also here: a lost tracking server told apart from
other errors, and runs left RUNNING by a dead process closed as KILLED.
"""

from __future__ import annotations

import os
import re
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from trainlab.errors import ResourceUnavailable
from trainlab.processes import pid_alive, signals_held

DRIVER_HINT = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient"}
# SQLAlchemy drivers of each database, as named in a URL (scheme+driver://) and as imported.
DRIVERS = {"postgresql": [("psycopg2", "psycopg2"), ("psycopg", "psycopg"), ("pg8000", "pg8000")],
           "mysql": [("pymysql", "pymysql"), ("mysqldb", "MySQLdb"), ("mysqlconnector", "mysql.connector")],
           "mssql": [("pymssql", "pymssql"), ("pyodbc", "pyodbc")]}
DAMAGED = ("file is not a database", "malformed")


def shown(uri: str) -> str:
    """The URI without a password (user:secret@host -> user:***@host)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", uri)


class Uninterrupted:
    """An MlflowClient whose calls complete before a Ctrl-C or SIGTERM takes effect.

    Interrupted inside a write, a sqlite store stays locked by the half-done transaction
    (its connection lives on in the KeyboardInterrupt's traceback), so closing the run as
    KILLED failed with 'database is locked' and a traceback. The signal waits for the call.
    """

    def __init__(self, client) -> None:
        self._client = client

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            with signals_held():
                return attr(*args, **kwargs)
        return call


@contextmanager
def sqlite_store_lock(uri: str) -> Iterator[None]:
    """Serialise opening a local sqlite store across processes.

    MLflow creates a fresh store's tables with migrations that are not safe to run twice
    at once: two stages started together on a new shared store crashed the second one.
    The lock (flock on the database file; sqlite's own locks are fcntl locks and do not
    interact with it) is held only while the store is opened and the experiment looked up.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    path = Path(uri[len("sqlite:///"):].split("?")[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:   # sqlite accepts an empty file as a new database
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def store_faults(uri: str) -> Iterator[None]:
    """Translate the ways opening or writing the store fails into ResourceUnavailable."""
    try:
        yield
    except Exception as err:
        fault = as_fault(err, uri, opening=True)
        if fault is None:
            raise
        raise fault from None


def as_fault(err: BaseException | None, uri: str, opening: bool = False) -> ResourceUnavailable | None:
    """The one-line ResourceUnavailable for `err` if it is a fault of the store or the disk, else None."""
    from trainlab.io import ENVIRONMENT_ERRNOS

    if isinstance(err, ImportError) and opening:
        package = err.name or "its database driver"
        other = installed_driver(uri, package)
        return ResourceUnavailable(f"tracking store {shown(uri)}: the Python package {package!r} this URL needs is "
                                   f"not installed (pip install {DRIVER_HINT.get(package, package)})"
                                   + (f", or name an installed driver: {other}://..." if other else ""))
    if isinstance(err, OSError) and (opening or err.errno in ENVIRONMENT_ERRNOS):
        where = err.filename or shown(uri)
        if isinstance(err, (FileExistsError, NotADirectoryError)):
            return ResourceUnavailable(f"tracking store {shown(uri)}: {where} is a file where a folder is needed")
        return ResourceUnavailable(f"{where}: cannot write: {ENVIRONMENT_ERRNOS.get(err.errno or 0, err.strerror)}"
                                   if not opening else
                                   f"tracking store {shown(uri)}: cannot open {where}: {err.strerror or err}")
    reason = database_error(err)
    if reason is None:
        return None
    if any(word in reason for word in DAMAGED):
        reason += " (the file is damaged or was overwritten: move it away to start a new store, or restore it)"
    return ResourceUnavailable(f"tracking store {shown(uri)}: {reason}")


def installed_driver(uri: str, missing: str) -> str | None:
    """`scheme+driver` for a driver of the URL's own database that is installed here, if any."""
    import importlib.util

    scheme = uri.split(":", 1)[0].split("+", 1)[0]
    for name, module in DRIVERS.get(scheme, []):
        try:
            if module != missing and importlib.util.find_spec(module) is not None:
                return f"{scheme}+{name}"
        except ImportError:   # mysql.connector: its parent package is missing
            continue
    return None


def database_error(err: BaseException | None) -> str | None:
    """The driver's own message if a SQLAlchemy database error is anywhere in the chain."""
    from sqlalchemy.exc import DBAPIError

    for _ in range(20):   # MLflow wraps the SQLAlchemy error; chains may loop, so bounded
        if err is None:
            return None
        if isinstance(err, DBAPIError):
            return str(err.orig if err.orig is not None else err).splitlines()[0]
        err = err.__cause__ or err.__context__
    return None


class SpaceReserve:
    """A little disk space held next to an sqlite store, given back to close a run on a full disk.

    When the disk fills up mid-stage, sqlite cannot write the run's final status either,
    and the run was left RUNNING (then KILLED by the next start) instead of FAILED.
    Named like io's temporaries, so one left by a killed process is removed by the next.
    """

    SIZE = 1 << 20

    def __init__(self, uri: str) -> None:
        self.path: Path | None = None
        if uri.startswith("sqlite:///"):
            from trainlab.io import remove_stale_temporaries, temp_name

            store = Path(uri[len("sqlite:///"):].split("?")[0])
            remove_stale_temporaries(store)
            self.path = temp_name(store)

    def hold(self) -> None:
        """Take the space now (best effort: on an already full disk there is nothing to hold)."""
        if self.path is None:
            return
        try:
            with open(self.path, "wb") as handle:
                os.posix_fallocate(handle.fileno(), 0, self.SIZE)
        except OSError:
            self.release()

    def release(self) -> None:
        if self.path is not None:
            try:
                self.path.unlink(missing_ok=True)
            except OSError:       # its folder cannot even be listed: nothing was held there
                pass


def mark_dead_runs_killed(client, experiment_id: str) -> None:
    """Runs left RUNNING by a process that no longer exists (SIGKILL, power loss) become KILLED."""
    host = socket.gethostname()
    runs = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                              max_results=200)
    for run in runs:
        tags = run.data.tags
        pid = tags.get("trainlab.pid")
        if tags.get("trainlab.host") != host or not pid or pid_alive(int(pid)):
            continue
        client.set_tag(run.info.run_id, "trainlab.error", "process died without closing the run")
        client.set_terminated(run.info.run_id, status="KILLED")


def server_lost(exc: BaseException | None) -> bool:
    """Whether an MLflow call failed because the tracking server stopped answering."""
    import requests

    for _ in range(20):   # walk the chain MLflow wraps requests' error in (bounded: chains can loop)
        if exc is None or isinstance(exc, requests.exceptions.RequestException):
            return exc is not None
        exc = exc.__cause__ or exc.__context__
    return False


def reason(exc: BaseException) -> str:
    """'[Errno 111] Connection refused' out of urllib3's long retry message, else its first line."""
    import re

    found = re.search(r"\[Errno -?\d+\][^'\")]*", str(exc))
    return found.group(0).strip() if found else str(exc).splitlines()[0][:200]

