"""The params a stage ran with, compared with params.yaml and with dvc.lock (trainlab.params_record).

Unit tests, no stage run: tests/test_params_midrun.py runs the real stages under dvc.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from trainlab import paths
from trainlab.config.sections import STAGE_PARAMS
from trainlab.stage_registry import STAGES
from trainlab.config.yaml_reader import read_yaml
from trainlab.errors import StaleParams
from trainlab.params_record import (UPSTREAM, check_upstream, declared_values, first_difference, load_stage_params,
                                    same, verify)
from trainlab.testing import ROOT


def test_upstream_is_every_ancestor_in_dvc_yaml() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]

    def names(entries) -> list[str]:
        return [str(next(iter(e)) if isinstance(e, dict) else e).rstrip("/") for e in entries or []]

    def inside(path: str, out: str) -> bool:
        return path == out or path.startswith(f"{out}/") or out.startswith(f"{path}/")

    parents = {stage: {other for other, spec in stages.items() if other != stage and any(
        inside(dep, out) for dep in names(stages[stage].get("deps")) for out in names(spec.get("outs")))}
        for stage in stages}

    def ancestors(stage: str) -> set[str]:
        return set().union(*({p} | ancestors(p) for p in parents[stage])) if parents[stage] else set()

    assert {stage: set(found) for stage, found in UPSTREAM.items()} == {stage: ancestors(stage) for stage in stages}
    assert list(UPSTREAM) == list(stages) == list(STAGE_PARAMS)   # pipeline order


def test_values_spelled_otherwise_are_equal() -> None:
    # As a person writes params.yaml, and as DVC writes the same values into dvc.lock.
    written = read_yaml("lr: 3e-3\neps: 1.0e-8\nweight_decay: 0\nbetas: [0.9, 0.999]\nscale: 1\n")
    locked = read_yaml("lr: 0.003\neps: 1e-08\nweight_decay: 0.0\nbetas:\n- 0.9\n- 0.999\nscale: 1.0\n")
    assert first_difference(written, locked) is None
    assert same((0.9, 0.999), [0.9, 0.999]) and same(float("nan"), float("nan"))
    assert not same(True, 1) and not same(0, False) and not same("1", 1) and not same([1], [1, 2])


def test_the_first_difference_names_its_dotted_key_and_both_values() -> None:
    old = {"seed": 0, "finetune": {"optimizer": {"lr": 0.002, "betas": [0.9, 0.999]}, "epochs": 3}}
    assert first_difference(old, {**old, "finetune": {**old["finetune"], "optimizer": {"lr": 0.009, "betas": [0.9, 0.999]}}}) \
        == ("finetune.optimizer.lr", 0.002, 0.009)
    assert first_difference(old, {**old, "finetune": {**old["finetune"], "optimizer": {"lr": 0.002, "betas": [0.9]}}}) \
        == ("finetune.optimizer.betas", [0.9, 0.999], [0.9])
    key, was, now = first_difference(old, {**old, "data.split_seed": 1})
    assert (key, repr(was), now) == ("data.split_seed", "(absent)", 1)


def test_a_stage_keeps_exactly_its_dvc_yaml_entries() -> None:
    raw = read_yaml((ROOT / "params.yaml").read_text())
    finetune = declared_values(raw, "finetune")
    assert list(finetune) == list(STAGE_PARAMS["finetune"])
    assert finetune["data.split_seed"] == raw["data"]["split_seed"] and finetune["model"] == raw["model"]
    json.dumps(finetune)   # plain values: written into a manifest as they are


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def set_line(project: Path, old: str, new: str) -> None:
    path = project / "params.yaml"
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def test_an_edit_of_another_stage_s_params_does_not_stop_a_stage(project: Path) -> None:
    _, ran_with = load_stage_params("ensemble", "params.yaml")
    set_line(project, "  experiment: trainlab", "  experiment: renamed")   # tracking: no stage's entry
    set_line(project, "  n_trials: 8 ", "  n_trials: 9 ")                  # search's, not ensemble's
    ran_with.check_unchanged()


def test_an_edit_of_its_own_params_stops_a_stage_and_removes_what_it_wrote(project: Path) -> None:
    older = project / "models" / "baselines" / "scratch.pt"   # another run's: kept
    older.parent.mkdir(parents=True)
    older.write_bytes(b"old")
    os.utime(older, (time.time() - 60, time.time() - 60))
    _, ran_with = load_stage_params("finetune", "params.yaml")
    (project / "models" / "baselines" / "linear").mkdir()
    (project / "models" / "baselines" / "linear" / "curves.json").write_text("{}")   # this run's
    ran_with.check_unchanged(written=[paths.BASELINES])   # nothing changed: nothing removed
    set_line(project, "  backbone_lr_scale: 0.1 ", "  backbone_lr_scale: 0.2 ")
    with pytest.raises(StaleParams) as stopped:
        ran_with.check_unchanged(written=[paths.BASELINES])
    assert str(stopped.value) == ("params.yaml changed while finetune ran (finetune.backbone_lr_scale: 0.1 -> 0.2); "
                                  "nothing written; rerun `dvc repro`")
    assert older.read_bytes() == b"old" and not (project / "models" / "baselines" / "linear").exists()


def test_a_params_file_broken_while_a_stage_ran_stops_it(project: Path) -> None:
    _, ran_with = load_stage_params("evaluate", "params.yaml")
    (project / "params.yaml").write_text("evaluate: [\n")
    with pytest.raises(StaleParams, match=r"^params.yaml changed while evaluate ran \(now unreadable: params.yaml: "):
        ran_with.check_unchanged()


def write_run(stage: str, values: dict, lock_values: dict) -> None:
    """What a stage run under DVC leaves: its record, and its dvc.lock entry."""
    record = STAGES[stage].params_record
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"stage": stage, "params": values}))
    lock = yaml.safe_load(paths.DVC_LOCK.read_text()) if paths.DVC_LOCK.is_file() else {"schema": "2.0", "stages": {}}
    lock["stages"][stage] = {"cmd": f"trainlab {stage}", "params": {"params.yaml": lock_values}}
    paths.DVC_LOCK.write_text(yaml.safe_dump(lock))


def test_records_are_checked_against_dvc_lock(project: Path) -> None:
    check_upstream("finetune")   # no dvc.lock (a stage run alone, a fresh tree): nothing to compare
    prepared = {"seed": 0, "data": {"val_fraction": 0.1}}
    write_run("prepare", prepared, prepared)
    write_run("pretrain", {"pretrain": {"optimizer": {"lr": 0.003, "eps": 1e-8}}},
              {"pretrain": {"optimizer": {"lr": 0.009, "eps": 1e-8}}})
    says = {v.stage: (v.ok, v.says) for v in verify()}
    assert says["prepare"] == (True, "ok (data/prepared/manifest.json matches dvc.lock)")
    wrong = ("ran with pretrain.optimizer.lr: 0.003, but dvc.lock records 0.009; "
             "rerun it with `dvc repro -f -s pretrain`, then `dvc repro`")
    assert says["pretrain"] == (False, wrong)
    assert says["finetune"] == (True, "not checked: no entry in dvc.lock")
    with pytest.raises(StaleParams) as stopped:
        check_upstream("finetune")
    assert str(stopped.value) == f"pretrain {wrong}"
    check_upstream("pretrain")   # only upstream stages: its own record is about to be replaced
