"""Atomic file writes: a temporary name in the same directory, fsync, then rename.

A stage killed mid-write leaves the previous file intact, never a half-written one. A
temporary name carries its writer's pid (`.<name>.<pid>.<random>.tmp`), so the next
write of the same file removes what a SIGKILLed writer left. Files and directories get
the ordinary 0666/0777 less the umask (mkstemp/mkdtemp would make them 0600/0700).
Running out of disk space or writing where one may not becomes one ResourceUnavailable
line naming the file, and the temporary is removed, which frees its space again.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from trainlab.errors import ResourceUnavailable
from trainlab.processes import pid_alive, signals_held

TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")
ENVIRONMENT_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                      errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                      errno.EPERM: "operation not permitted", errno.ENOTDIR: "a file is in the way of a folder",
                      errno.EEXIST: "a file is in the way of a folder",
                      errno.EIO: "input/output error (the disk or its file system failed)"}


def temp_name(path: Path) -> Path:
    """A fresh temporary name next to `path`, marked with this process's pid."""
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporaries of `path` whose writer process no longer exists (it was killed)."""
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        found = TEMP_PATTERN.match(entry.name)
        if found and found["name"] == path.name and not pid_alive(int(found["pid"])):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                Path(entry.path).unlink(missing_ok=True)


@contextmanager
def environment_faults(what: str | Path) -> Iterator[None]:
    """Turn a full disk, a read-only file system or a denied write into one line naming `what`."""
    try:
        yield
    except OSError as err:
        fault = environment_fault(err, what)
        if fault is None:
            raise
        raise fault from None


def environment_fault(err: OSError, what: str | Path) -> ResourceUnavailable | None:
    """The one-line ResourceUnavailable for an OSError that is the machine's fault, else None."""
    reason = ENVIRONMENT_ERRNOS.get(err.errno or 0)
    if reason is None:
        return None
    where = f" ({err.filename})" if err.filename and str(err.filename) != str(what) else ""
    return ResourceUnavailable(f"{what}: cannot write: {reason}{where}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` atomically."""
    path = Path(path)
    with environment_faults(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        tmp_path = temp_name(path)
        os.close(os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))   # umask applies
        try:
            yield tmp_path
            with open(tmp_path, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp_path, path)
        finally:
            tmp_path.unlink(missing_ok=True)


@contextmanager
def staging_dir(target: str | Path) -> Iterator[Path]:
    """A fresh directory next to `target` to build it in; removed again if the block fails.

    The caller swaps it into place; like atomic_path's files it is named after its writer's
    pid, so one left by a killed writer is removed by the next.
    """
    target = Path(target)
    with environment_faults(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        staging = temp_name(target)
        staging.mkdir()                         # 0777 less the umask
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def require_writable(*folders: str | Path) -> None:
    """Fail now, not after hours of training, if an output folder cannot be written.

    Probes the folder, or the nearest existing folder above it (creating nothing: a stage
    that fails later for another reason must not leave empty output folders behind).
    """
    for folder in map(Path, folders):
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        with environment_faults(folder):
            if not existing.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "a file is in the way", str(existing))
            probe = temp_name(existing / "write-check")
            try:
                os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            except OSError as err:   # name the folder, not the probe's made-up name
                raise OSError(err.errno, err.strerror, str(folder)) from None
            probe.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def check_archive(path: str | Path) -> None:
    """Verify the CRC-32 of every record of a torch.save zip archive; raise BadZipFile if one fails.

    torch.load does not check them: a flipped byte in tensor data loads silently as other
    weights. Checking first turns a damaged or tampered file into an error naming it.
    """
    import zipfile

    with zipfile.ZipFile(path) as archive:
        damaged = archive.testzip()
        # A record flagged as a DOS directory (attribute 0x10) is read by torch as
        # uninitialised memory; torch.save never sets it.
        damaged = damaged or next((i.filename for i in archive.infolist() if i.external_attr & 0x10), None)
    if damaged is not None:
        raise zipfile.BadZipFile(f"record {damaged.split('/', 1)[-1]} is damaged (CRC-32 or header check failed)")


def load_error_line(err: BaseException) -> str:
    """One plain line out of torch.load's error: for a refused object, what was refused.

    torch's weights-only message starts with "This file can still be loaded, ... two
    options" (with terminal escape codes): wrong advice for a file that smuggles code.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    refused = next((line for line in lines if re.search(r"unsupported global", line, re.IGNORECASE)), None)
    if refused:
        return ("holds an object that is not plain data, refused: "
                + refused.removeprefix("WeightsUnpickler error: ").split(". ")[0].rstrip("."))
    return lines[0] if lines else type(err).__name__


def torch_save(obj: Any, path: str | Path) -> None:
    """torch.save, atomically, and byte-identical for identical contents.

    Given a file name, torch names the zip's inner folder after it (here the random
    temporary name), and the archive's serialization id hashes the record names: every
    save would differ. Given an open file, torch names the folder `archive`, so equal
    tensors and metadata give equal bytes and DVC's md5 shows a rerun reproduced a model.
    """
    import torch

    # Through a Python file object: a full disk is then an OSError (ENOSPC) rather than
    # torch's "unexpected pos 704 vs 598" from its own writer. Ctrl-C waits for the save:
    # a KeyboardInterrupt inside torch's zip writer surfaced as that same RuntimeError, a
    # traceback and exit 1 instead of the interrupt's clean exit 130 with the checkpoint kept.
    with signals_held(), atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)
