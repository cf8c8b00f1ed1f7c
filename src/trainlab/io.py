"""Atomic file writes: a temporary name in the same directory, fsync, then rename.

A stage killed mid-write leaves the previous file intact, never a half-written one.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


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

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)
