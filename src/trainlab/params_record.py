"""The params each stage ran with: recorded in its outputs, checked at both ends of its run.

`dvc repro` runs a stage's command and only then reads params.yaml for the stage's entry
in dvc.lock. An edit made while the command ran (finetune trained with lr 0.002, the file
said 0.009 by the time it exited) went into dvc.lock as what the stage had used:
`dvc status` said everything was up to date, and later stages built on it. So:

1. A stage keeps its entries of params.yaml (the sections dvc.yaml declares for it,
   `STAGE_PARAMS`) as it read them at its start, in the shape dvc.lock records them, and
   writes them into one of its DVC outputs (`Stage.params_record` in trainlab.stage_registry).
2. Just before it writes an output it reads params.yaml again; a change since its start
   stops it (`StaleParams`) with nothing written, so DVC records nothing either.
3. An edit after that last read still reaches dvc.lock: every later stage, at its start,
   and `trainlab verify` compare each upstream stage's record with its dvc.lock entry.

Editing params.yaml between two stages is legitimate: the stage that ran has its own,
true entry, `dvc status` reports the edit, and the next `dvc repro` reruns what depends on it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from trainlab import paths
from trainlab.config import Params, validate
from trainlab.config.load import read_params_file
from trainlab.config.sections import STAGE_PARAMS
from trainlab.errors import ParamsError, StaleParams
from trainlab.io import write_json
from trainlab.stage_registry import PIPELINE, stage as registry_stage

# The stages whose outputs a stage reads, directly or through another's (the ancestors in
# dvc.yaml's graph; tests/test_params_record.py derives them from its deps and outs).
UPSTREAM: dict[str, tuple[str, ...]] = {stage.name: stage.upstream for stage in PIPELINE}


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


ABSENT = _Absent()   # a key one side has and the other lacks


@dataclass(frozen=True)
class ParamsRecord:
    """What one run of `stage` read of the params file, and when."""

    stage: str
    source: Path              # the params file it read (--params)
    values: dict[str, Any]    # its dvc.yaml entries: {"seed": 0, "data.split_seed": 1, "model": {...}}
    started: float            # time.time() before the read: an output file newer than this is this run's

    def check_unchanged(self, written: Sequence[Path] = ()) -> None:
        """Stop the stage if its entries in the params file differ from those it started with.

        Called just before the stage writes an output. `written`: outputs it may have written
        already (finetune's earlier baselines, the model ensemble's builder saves); what this
        run wrote there is removed first, so no file is left that no manifest vouches for.
        """
        try:
            now = declared_values(read_params_file(self.source), self.stage)
        except ParamsError as err:   # mid-edit, or broken by the edit: changed all the same
            change = f"now unreadable: {err}"
        else:
            found = first_difference(self.values, now)
            change = found and f"{found[0]}: {shown(found[1])} -> {shown(found[2])}"
        if change:
            discard_written(written, self.started)
            raise StaleParams(f"{self.source} changed while {self.stage} ran ({change}); nothing written; "
                              f"rerun `dvc repro`")

    def write(self) -> None:
        """The record as a file of its own (search, evaluate; the others keep it in their manifest)."""
        write_json(registry_stage(self.stage).params_record, {"stage": self.stage, "params": self.values})


def load_stage_params(stage: str, path: str | Path) -> tuple[Params, ParamsRecord]:
    """Read the params file once: the validated Params, and the stage's entries as read."""
    started = time.time()
    raw = read_params_file(path)
    record = ParamsRecord(stage, Path(path), declared_values(raw, stage), started)   # a copy: before validate
    return validate(raw, source=str(path)), record


def declared_values(raw: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The stage's entries of a params mapping as dvc.lock keeps them: {entry: value}, an
    entry being a section (`model`) or a dotted key (`data.split_seed`)."""
    values = {}
    for entry in STAGE_PARAMS[stage]:
        node: Any = raw
        for part in entry.split("."):
            node = node.get(part, ABSENT) if isinstance(node, dict) else ABSENT
        if node is not ABSENT:   # DVC refuses to run a stage without it; a stage run alone may lack it
            values[entry] = plain(node)
    return values


def plain(value: Any) -> Any:
    """A JSON-shaped copy: mappings with string keys, lists, numbers, strings, bools, None."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)   # a YAML date or the like: compared as its text


def first_difference(old: Any, new: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """(dotted key, old value, new value) of the first difference, or None if equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for name in [*old, *(name for name in new if name not in old)]:
            found = first_difference(old.get(name, ABSENT), new.get(name, ABSENT), f"{key}.{name}" if key else name)
            if found:
                return found
        return None
    return None if same(old, new) else (key, old, new)


def same(a: Any, b: Any) -> bool:
    """Equal as values: 1e-3 is 0.001 and 1 is 1.0 (YAML spellings, and a float DVC wrote
    back), a tuple is a list; but true is never 1 (Python's True == 1 would say it is)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return first_difference(a, b) is None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and a == b


def shown(value: Any) -> str:
    """A value as one short piece of a message: JSON (strings quoted, null, true)."""
    return repr(value) if value is ABSENT else json.dumps(value)


def discard_written(outputs: Sequence[Path], since: float) -> None:
    """Remove the files (and then empty folders) under `outputs` written since `since`.

    DVC deletes a stage's outputs before running it, so this leaves what DVC left; a stage
    run alone keeps its older files (and the manifest that vouches for them)."""
    for out in map(Path, outputs):
        # Deepest first (a reversed sort puts a folder after everything in it), the folder itself last.
        found = sorted(out.rglob("*"), reverse=True) + [out] if out.is_dir() else [out]
        for path in found:
            try:
                if path.stat(follow_symlinks=False).st_mtime < since:
                    continue
                if path.is_dir() and not path.is_symlink():
                    if not any(path.iterdir()):
                        path.rmdir()
                else:
                    path.unlink()
            except FileNotFoundError:
                continue


def read_lock(path: Path = paths.DVC_LOCK) -> dict[str, dict]:
    """Each stage's params.yaml entry in dvc.lock, by stage ({} where there is no dvc.lock)."""
    import yaml

    from trainlab.config.yaml_reader import read_yaml   # reads 1e-08 as DVC wrote it: a number

    if not path.is_file():
        return {}
    try:
        lock = read_yaml(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise StaleParams(f"{path}: unreadable ({str(err).splitlines()[0]}); restore it with "
                          f"`git checkout {path}`") from None
    stages = lock.get("stages") if isinstance(lock, dict) else None
    entries = {}
    for name, entry in (stages if isinstance(stages, dict) else {}).items():
        params = entry.get("params") if isinstance(entry, dict) else None
        values = params.get(paths.PARAMS.as_posix()) if isinstance(params, dict) else None
        entries[name] = plain(values) if isinstance(values, dict) else {}
    return entries


def recorded(stage: str) -> dict[str, Any] | None:
    """The params `stage`'s outputs say it ran with; None without a record (not run, or
    outputs of a trainlab from before the records)."""
    path = registry_stage(stage).params_record
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        # Not this check's to report: the stage that reads the file stops on it with its own
        # line (a corrupt manifest, a model file that fails its hash); `verify` says "damaged".
        return None
    params = record.get("params") if isinstance(record, dict) else None
    return params if isinstance(params, dict) else None


def mismatch(stage: str, lock: Mapping[str, dict]) -> str | None:
    """How `stage`'s record differs from its dvc.lock entry ('ran with KEY: ..., but dvc.lock
    records ...; rerun it ...'); None if they agree or either is missing."""
    entry, record = lock.get(stage), recorded(stage)
    found = None if entry is None or record is None else first_difference(record, entry)
    if found is None:
        return None
    key, ran, locked = found
    # Its entry matches params.yaml, so a plain `dvc repro` would find nothing to do: force it.
    return (f"ran with {key}: {shown(ran)}, but dvc.lock records {shown(locked)}; "
            f"rerun it with `dvc repro -f -s {stage}`, then `dvc repro`")


def check_upstream(stage: str) -> None:
    """Stop `stage` before its work if an upstream stage's outputs were made with other
    params than dvc.lock says (params.yaml edited after that stage's last check)."""
    lock = read_lock()
    for upstream in UPSTREAM[stage]:
        problem = mismatch(upstream, lock)
        if problem:
            raise StaleParams(f"{upstream} {problem}")


@dataclass(frozen=True)
class Verdict:
    """One line of `trainlab verify`."""

    stage: str
    ok: bool
    says: str   # "ok", "not checked: why", or the difference


def verify() -> list[Verdict]:
    """Every stage's record against its dvc.lock entry (`trainlab verify`), in pipeline order."""
    lock = read_lock()
    verdicts = []
    for stage in STAGE_PARAMS:
        record = registry_stage(stage).params_record
        if stage not in lock:
            verdicts.append(Verdict(stage, True, "not checked: no entry in dvc.lock"))
        elif recorded(stage) is None:
            what = "not found" if not record.is_file() else _why_no_params(record, stage)
            verdicts.append(Verdict(stage, True, f"not checked: {record} {what}"))
        else:
            problem = mismatch(stage, lock)
            verdicts.append(Verdict(stage, problem is None, problem or f"ok ({record} matches dvc.lock)"))
    return verdicts


def _why_no_params(path: Path, stage: str) -> str:
    try:
        json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        return f"damaged (not JSON); rerun it with `dvc repro -f -s {stage}`"
    return "records no params (written by an older trainlab)"
