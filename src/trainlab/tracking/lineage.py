"""Where a run came from: git commit and dirtiness, DVC experiment, pipeline invocation, versions."""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
from importlib import metadata


def git_state(cwd: str = ".") -> dict[str, str]:
    """The commit checked out and whether tracked files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    return {"git.commit": commit or "none", "git.dirty": str(dirty).lower()}


def pipeline_run_id() -> str:
    """An id shared by every stage that one `dvc repro` / `dvc exp run` invocation starts.

    DVC runs each stage as a child process, so the nearest ancestor process whose
    command line is dvc (its pid plus start time, which makes it unique) identifies
    the invocation. Outside DVC the stage's own process is used.
    """
    pid = os.getpid()
    chosen = pid
    while pid > 1:
        if _is_dvc(_read(f"/proc/{pid}/cmdline").split("\0")):
            chosen = pid
            break
        pid = _parent_pid(pid)
    start = _read(f"/proc/{chosen}/stat").rsplit(")", 1)[-1].split()[19:20]
    return hashlib.sha1(f"{socket.gethostname()}:{chosen}:{start}".encode()).hexdigest()[:12]


def _is_dvc(argv: list[str]) -> bool:
    """`dvc ...`, `python .../bin/dvc ...` (the console script via its shebang) or `python -m dvc ...`."""
    names = [os.path.basename(arg) for arg in argv[:3]]
    return "dvc" in names[:2] or names[1:3] == ["-m", "dvc"] or any("dvc/__main__" in arg for arg in argv[:2])


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def _parent_pid(pid: int) -> int:
    fields = _read(f"/proc/{pid}/stat").rsplit(")", 1)[-1].split()
    return int(fields[1]) if len(fields) > 1 else 1


def versions() -> dict[str, str]:
    """Versions that decide whether a rerun can be bit-identical."""
    import torch

    from trainlab import __version__

    return {"trainlab.version": __version__, "torch.version": torch.__version__,
            "python.version": platform.python_version(), "host": socket.gethostname()}


def environment_freeze() -> str:
    """The installed distributions, like `pip freeze` but without spawning pip."""
    lines = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
                    if d.metadata["Name"]}, key=str.lower)
    return "\n".join(lines) + "\n"
