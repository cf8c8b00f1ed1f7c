"""Whether a process recorded by an earlier stage (in an MLflow tag or a trial attribute) still runs."""

import os


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
