"""A full disk on demand: the project on a small tmpfs, filled while a command runs.

The tmpfs lives in a private mount namespace (`unshare --mount`), so it vanishes with the
script; mounting needs root or user namespaces (exit NO_MOUNT where the machine lacks them).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from trainlab.testing import run

NO_MOUNT = 90   # the script's exit status when the tmpfs could not be mounted


def in_mount_namespace(script: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a bash script in a private mount namespace: its mounts vanish with it."""
    return run(["unshare", "--mount", "--propagation", "private", "bash", "-uc", script], cwd,
               check=False, timeout=timeout)


def filled_during(project: Path, mnt: Path, out: Path, command: str, checkpoint: str, then: str = "") -> str:
    """A script: copy `project` onto a 64 MB tmpfs at `mnt`, run `command` there (output in
    out/first.log, exit status in out/first.rc), fill the disk once `checkpoint` exists, free it
    when the command ended, run `then`, and copy the project to out/after."""
    return f"""
mount -t tmpfs -o size=64m tmpfs {mnt} || exit {NO_MOUNT}
cp -a {project} {mnt}/p && cd {mnt}/p
{command} > {out}/first.log 2>&1 &
pid=$!
while [ ! -f {checkpoint} ] && kill -0 $pid 2>/dev/null; do sleep 0.05; done
cat /dev/zero > {mnt}/filler 2>/dev/null
wait $pid; echo $? > {out}/first.rc
rm -f {mnt}/filler
{then}
cp -a {mnt}/p {out}/after
"""
