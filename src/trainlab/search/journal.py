"""The study journal, checked before Optuna appends to it: a torn last record is cut off.

The journal holds one JSON record a line, each ending in a newline. A full disk or a power
loss can leave its last line half-written. Optuna skips such a line when it reads, but its
next append glues onto the torn bytes, and from then on every read of the file fails
(JSONDecodeError, AttributeError or AssertionError deep in Optuna, depending on where the
tear is), for every study the file holds. So before a search opens the journal, under
Optuna's own lock on it, the file is cut back to its last whole record:

    ... whole records ... | torn record [glued records ...]      -> cut at the "|"

Nothing any process read is lost: Optuna never applies a torn record, and a reader stops
at it, so no record appended after one was ever applied either (its writer crashed on its
next read). A line that is not a record but no tear either (damage in the middle of the
file, with no record glued onto it) stops the search with one line saying what to do.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from trainlab.errors import ResourceUnavailable
from trainlab.io import environment_faults

# Optuna writes every record as json.dumps({"op_code": ..., "worker_id": ..., ...}) with
# compact separators, so a record starts with these bytes (which no JSON string holds).
RECORD_START = b'{"op_code":'
OP_CODES = range(0, 11)   # optuna.storages.journal's JournalOperation values


def repair_journal(path: Path) -> int:
    """Cut a torn record (and whatever was glued after it) off the journal at `path`; returns the bytes cut."""
    from optuna.storages.journal import JournalFileSymlinkLock

    if not path.is_file():
        return 0
    # The lock every JournalFileBackend of this path takes to append (its absolute target,
    # as study.storage_url opens it), so no search appends while the file is cut.
    lock = JournalFileSymlinkLock(str(path.resolve()))
    with environment_faults(path):   # a read-only or failing disk: one line naming the journal
        lock.acquire()
        try:
            data = path.read_bytes()
            keep, line = whole_length(path, data)
            if keep < len(data):
                os.truncate(path, keep)
        finally:
            lock.release()
    if keep == len(data):
        return 0
    print(f"search: {path}: cut {len(data) - keep} bytes from line {line} on, a record torn by a full disk or "
          f"an interrupted write; the study goes on from the records before it", file=sys.stderr)
    return len(data) - keep


def whole_length(path: Path, data: bytes) -> tuple[int, int]:
    """(bytes of whole records at the start of `data`, the line number of the first torn one).

    Raises ResourceUnavailable for a damaged line that no interrupted write leaves: one in
    the middle of the file with no record glued onto it.
    """
    lines = data.split(b"\n")   # how Optuna reads it; after the last newline: b"" or a torn record
    offset = 0
    for number, line in enumerate(lines[:-1], start=1):
        if not is_record(line):
            after = len(lines) - 1 - number
            if after and RECORD_START not in line[1:]:
                raise ResourceUnavailable(
                    f"{path}: line {number} is damaged, not a record Optuna wrote (no interrupted write leaves "
                    f"that); keep the records before it with `truncate -s {offset} {path}` (the {after} lines "
                    f"after it are lost: their trials run again), or move the file away to start every study "
                    f"in it afresh")
            return offset, number
        offset += len(line) + 1
    return offset, len(lines)


def is_record(line: bytes) -> bool:
    """A whole journal record: a JSON object with one of Optuna's op codes and a writer id."""
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return False
    return (isinstance(record, dict) and type(record.get("op_code")) is int
            and record["op_code"] in OP_CODES and isinstance(record.get("worker_id"), str))
