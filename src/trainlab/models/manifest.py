"""Which model file each stage wrote: SHA-256 records, checked by every stage that reads one.

pretrain, finetune and ensemble each write `models/manifests/<stage>.json` (a DVC output)
once their model files are written; the search records the SHA-256 of each top-k file in
`models/search/members.json`. A stage that reads a model file checks it against that
record, so a file copied over another (pretrained.pt over finetuned.pt) or left over from
another run is refused in one line naming it, instead of being scored as what it is not.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from trainlab import paths
from trainlab.errors import CheckpointError
from trainlab.hashing import sha256_file
from trainlab.io import write_json

SHA256 = re.compile(r"^[0-9a-f]{64}$")


def write_manifest(stage: str, files: list[Path], params: dict | None = None) -> None:
    """Record the SHA-256 of the model files `stage` just wrote (call it after the last one)
    and the params it ran with (trainlab.params_record checks them against dvc.lock)."""
    record = {"stage": stage, "sha256": {path.as_posix(): sha256_file(path) for path in files}}
    write_json(paths.model_manifest(stage), record if params is None else {**record, "params": params})


def read_members(index: Path = paths.SEARCH_MEMBERS) -> list[dict]:
    """The search's members.json: one entry per top-k file, best first; damage is one CheckpointError."""
    if not index.is_file():
        raise CheckpointError(f"{index}: not found; run `dvc repro search` first")
    try:
        members = json.loads(index.read_bytes())
    except (ValueError, UnicodeDecodeError) as err:
        raise _damaged(index, f"not JSON: {str(err)[:80]}") from None
    if not isinstance(members, list) or not members:
        raise _damaged(index, "not a list of the top-k models")
    for number, member in enumerate(members, start=1):
        problem = _member_problem(member)
        if problem:
            raise _damaged(index, f"entry {number} {problem}")
    return members


def check_recorded(path: Path) -> None:
    """Refuse the model file `path` unless it is the one the stage that wrote it recorded."""
    path = Path(path)
    if path.parent == paths.SEARCH_MODELS:
        record, stage = paths.SEARCH_MEMBERS, "search"
        member = next((m for m in read_members(record) if m["file"] == path.name), None)
        if member is not None and "sha256" not in member:
            raise CheckpointError(f"{path}: {record} records no SHA-256 for it; rerun `dvc repro search`")
        recorded = member and member["sha256"]
    elif path in paths.MODEL_STAGE:
        stage = paths.MODEL_STAGE[path]
        record = paths.model_manifest(stage)
        recorded = _manifest(record, stage).get(path.as_posix())
    else:
        return   # not a file of the pipeline's: nothing recorded it
    if recorded is None:
        raise CheckpointError(f"{path}: {record} does not list it, so it is not a file the last {stage} wrote; "
                              f"rerun `dvc repro {stage}`")
    if sha256_file(path) != recorded:
        raise CheckpointError(f"{path}: not the file {stage} wrote (its SHA-256 differs from the one in {record}); "
                              f"restore it with `dvc checkout {path}` or rerun `dvc repro {stage}`")


def _manifest(record: Path, stage: str) -> dict[str, str]:
    if not record.is_file():
        raise CheckpointError(f"{record}: not found, so no model file of {stage} can be checked; "
                              f"rerun `dvc repro {stage}`")
    try:
        manifest = json.loads(record.read_bytes())
    except (ValueError, UnicodeDecodeError) as err:
        raise _damaged(record, f"not JSON: {str(err)[:80]}") from None
    hashes = manifest.get("sha256") if isinstance(manifest, dict) else None
    if not isinstance(hashes, dict) or not all(isinstance(v, str) and SHA256.match(v) for v in hashes.values()):
        raise _damaged(record, "not a map of model files to SHA-256 hashes")
    return hashes


def _member_problem(member: object) -> str | None:
    if not isinstance(member, dict):
        return "is not a mapping"
    if type(member.get("rank")) is not int or member["rank"] < 1:
        return "has no rank (a number from 1)"
    name = member.get("file")
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        return "has no file name in its folder"
    if "sha256" in member and not (isinstance(member["sha256"], str) and SHA256.match(member["sha256"])):
        return "has a sha256 that is not a SHA-256"
    return None


def _damaged(path: Path, what: str) -> CheckpointError:
    producer = "search" if path == paths.SEARCH_MEMBERS else path.stem
    return CheckpointError(f"{path}: damaged ({what}); restore it with `dvc checkout {path}` "
                           f"or rerun `dvc repro {producer}`")
