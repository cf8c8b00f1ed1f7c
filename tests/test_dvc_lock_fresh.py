"""The committed dvc.lock matches the code and params it was recorded from (issue 28, item 2).

A commit that changes a stage's dependency (a file of src/ or stages/, a params section, the
user-data placeholder) without re-recording dvc.lock left `dvc status` listing every stage
on a fresh clone, so docs/reproducibility.md's "`dvc pull`; `dvc repro`: nothing runs" failed and every
metrics file differed from git after `make repro`. No training here: `dvc status` runs in a
copy holding only dvc.yaml, dvc.lock, params.yaml and the dependencies that are not another
stage's output, and whatever it finds changed among those fails the test. Outputs (data,
models, reports) are not there, so their state is not looked at.

The fix for a failure: rerun the stages it names (`dvc repro`) and commit dvc.lock with the
change; `dvc commit` only where the outputs cannot change (comments, imports).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from trainlab.testing import BIN, ROOT, run

IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def outputs(lock: dict) -> set[str]:
    return {out["path"].rstrip("/") for stage in lock["stages"].values() for out in stage.get("outs", [])}


def source_deps(lock: dict) -> set[str]:
    """Every dependency dvc.lock records that no stage writes: code, params files, user data."""
    made = outputs(lock)
    return {dep["path"].rstrip("/") for stage in lock["stages"].values() for dep in stage.get("deps", [])
            if dep["path"].rstrip("/") not in made}


def declared_outputs(dvc_yaml: dict) -> list[Path]:
    return [Path(next(iter(entry)) if isinstance(entry, dict) else entry)
            for stage in dvc_yaml["stages"].values() for kind in ("outs", "metrics", "plots")
            for entry in stage.get(kind) or []]


def stale(root: Path, work: Path) -> dict[str, object]:
    """Per stage, what `dvc status` finds changed in its command, code, params or data deps, or
    missing from dvc.lock; {} when the lock is fresh."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    work.mkdir(parents=True)
    run([str(BIN / "dvc"), "init", "--no-scm", "-q"], work)
    for name in ("dvc.yaml", "dvc.lock", "params.yaml", ".dvcignore"):
        shutil.copy(root / name, work / name)
    for path in sorted(source_deps(lock) | {"src", "stages"}):
        source, target = root / path, work / path
        if source.is_dir():
            shutil.copytree(source, target, ignore=IGNORED, dirs_exist_ok=True)
        elif source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    status = json.loads(run([str(BIN / "dvc"), "status", "--json"], work).stdout or "{}")
    # Another stage's output is absent here, not stale: those in the lock, and those dvc.yaml
    # declares since (checked below, stage by stage, against the lock).
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    made = outputs(lock) | {str(out) for out in declared_outputs(spec)}
    found: dict[str, object] = {}
    for stage, changes in status.items():
        for change in changes:
            if isinstance(change, str):          # "changed command", "always changed", ...
                found.setdefault(stage, []).append(change)
                continue
            deps = {path: what for path, what in change.get("changed deps", {}).items()
                    if path.rstrip("/") not in made}
            if deps:
                found.setdefault(stage, []).append(deps)
    for stage in spec["stages"]:
        if stage not in lock["stages"]:
            found.setdefault(stage, []).append("not in dvc.lock")
            continue
        recorded = {out["path"].rstrip("/") for out in lock["stages"][stage].get("outs", [])}
        new = sorted(str(out) for out in declared_outputs({"stages": {stage: spec["stages"][stage]}})
                     if str(out) not in recorded)
        if new:   # `dvc status` lists a new output only among the outputs it looks up, ignored here
            found.setdefault(stage, []).append({"outputs not in dvc.lock": new})
    return found


def test_dvc_lock_matches_the_code_and_params_of_the_checkout(tmp_path: Path) -> None:
    found = stale(ROOT, tmp_path / "copy")
    assert found == {}, ("dvc.lock is stale: a stage's code, params or data changed since it was recorded. "
                         "Rerun the stages (`dvc repro`) and commit dvc.lock with the change (`dvc commit` "
                         f"only where the outputs cannot change): {json.dumps(found, indent=1)[:3000]}")


def test_the_check_finds_an_edited_source_file_and_param(tmp_path: Path) -> None:
    """The check itself, on a copy of the checkout whose lock is made fresh there (placeholder
    outputs, `dvc commit`): clean, then one code file and one param edited, each naming only
    the stages that read it."""
    copy = tmp_path / "copy"
    stale(ROOT, copy)
    for out in declared_outputs(yaml.safe_load((copy / "dvc.yaml").read_text())):
        target = copy / out
        if out.suffix:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("{}")
        else:
            (target / "placeholder").parent.mkdir(parents=True, exist_ok=True)
            (target / "placeholder").write_text("x")
    run([str(BIN / "dvc"), "commit", "--force", "-q"], copy)
    assert stale(copy, tmp_path / "fresh") == {}

    combine = copy / "src/trainlab/ensemble/combine.py"
    combine.write_text(combine.read_text() + "\n# edited\n")
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["evaluate"]["calibration_bins"] += 1
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    found = stale(copy, tmp_path / "edited")
    # ensemble lists the whole folder, evaluate the file; DVC names a params section, not the key.
    assert found == {"ensemble": [{"src/trainlab/ensemble": "modified"}],
                     "evaluate": [{"src/trainlab/ensemble/combine.py": "modified",
                                   "params.yaml": {"evaluate": "modified"}}]}, found
