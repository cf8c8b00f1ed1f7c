"""dvc.yaml lists, for every stage, exactly the project code its command imports.

The closure is computed from the code (tests never keep a hand-written list), so a new
module that a stage starts importing fails here until `python -m trainlab.stage_deps`'s
output is copied into dvc.yaml.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from trainlab import stage_deps
from trainlab.stage_deps import as_deps, closure, differences, imported_names
from trainlab.testing import ROOT

SRC = ROOT / "src" / "trainlab"
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_every_stage_lists_the_code_its_command_imports() -> None:
    found = differences()
    assert found == {}, ("dvc.yaml code deps differ from the import closure; run "
                         f"`python -m trainlab.stage_deps` and copy its lists: {found}")


def test_each_stage_runs_the_command_the_closure_starts_from() -> None:
    for name, stage in DVC_YAML["stages"].items():
        assert stage["cmd"] == f"trainlab {name}", name
        files = closure(name)
        assert {SRC / "cli.py", SRC / "__init__.py", ROOT / "stages" / f"{name}.py"} <= files, name


def test_removing_an_imported_file_from_dvc_yaml_fails_the_check(tmp_path: Path) -> None:
    for stage, dep in [("evaluate", "src/trainlab/ensemble/combine.py"), ("finetune", "src/trainlab/training"),
                       ("pretrain", "src/trainlab/models")]:
        edited = yaml.safe_load((ROOT / "dvc.yaml").read_text())
        edited["stages"][stage]["deps"].remove(dep)
        path = tmp_path / "dvc.yaml"
        path.write_text(yaml.safe_dump(edited, sort_keys=False))
        assert differences(path) == {stage: ([dep], [])}, dep


def test_a_dep_the_stage_does_not_import_fails_the_check_too(tmp_path: Path) -> None:
    edited = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    edited["stages"]["pretrain"]["deps"].append("src/trainlab/ensemble/combine.py")
    path = tmp_path / "dvc.yaml"
    path.write_text(yaml.safe_dump(edited, sort_keys=False))
    assert differences(path) == {"pretrain": ([], ["src/trainlab/ensemble/combine.py"])}


def test_deps_are_precise_per_stage() -> None:
    # Editing ensemble.py reruns ensemble and evaluate only; search code only search.
    uses = {name: closure(name) for name in DVC_YAML["stages"]}
    assert {n for n, files in uses.items() if SRC / "ensemble" / "combine.py" in files} == {"ensemble", "evaluate"}
    assert {n for n, files in uses.items() if SRC / "search" / "study.py" in files} == {"search"}
    assert all(SRC / "stage_deps.py" not in files for files in uses.values())
    # A folder is listed whole only when the stage imports every module in it.
    assert "src/trainlab/engine" in as_deps(uses["pretrain"])
    assert "src/trainlab/data" not in as_deps(uses["prepare"])   # not data/served_inputs.py
    assert "src/trainlab/data" not in as_deps(uses["pretrain"])
    assert "src/trainlab/data/build.py" not in as_deps(uses["pretrain"])


def test_stages_that_do_not_train_depend_on_neither_the_engine_nor_the_training_layer() -> None:
    # An edit to the training loop or the fold pool reruns the stages that train, not these.
    declared = stage_deps.declared_code_deps()
    for stage in ("ensemble", "evaluate"):
        assert not [dep for dep in declared[stage] if dep.startswith(("src/trainlab/training", "src/trainlab/engine"))]
        assert SRC / "training" / "jobs.py" not in closure(stage)
    assert not [dep for dep in declared["prepare"] if dep.startswith(("src/trainlab/engine", "src/trainlab/training"))]
    # ... while the stages that train do depend on both.
    assert SRC / "training" / "jobs.py" in closure("finetune") and SRC / "engine" / "loop.py" in closure("pretrain")


def test_imports_inside_functions_and_relative_imports_count(tmp_path: Path) -> None:
    module = tmp_path / "mod.py"
    module.write_text("import os\n"
                      "from trainlab import paths\n"
                      "from . import sibling\n"
                      "from ..config import load\n"
                      "def later():\n"
                      "    from trainlab.ensemble.combine import load_any\n"
                      "    import trainlab.models.store\n"
                      "RELAUNCH = [sys.executable, '-m', 'trainlab', 'pretrain']\n")
    names = imported_names(module, "trainlab.pkg.mod")
    assert {"os", "trainlab.paths", "trainlab.pkg.sibling", "trainlab.config.load",
            "trainlab.ensemble.combine", "trainlab.models.store", "trainlab.__main__"} <= names


def test_the_ddp_relaunch_counts_as_code_the_stage_runs() -> None:
    # `trainer.devices: N` reruns pretrain/finetune as `python -m trainlab ...` under torchrun.
    uses = {name: closure(name) for name in DVC_YAML["stages"]}
    assert {n for n, files in uses.items() if SRC / "__main__.py" in files} == \
        {n for n, files in uses.items() if SRC / "launch.py" in files} == {"pretrain", "finetune"}


def test_a_new_module_imported_lazily_joins_the_closure(tmp_path: Path, monkeypatch) -> None:
    # A copy of the code where evaluation/scores.py starts importing a new module inside a function.
    for tree in ("src", "stages"):
        subprocess.run(["cp", "-r", str(ROOT / tree), str(tmp_path / tree)], check=True)
    (tmp_path / "src/trainlab/brand_new_module.py").write_text("import math\n")
    evaluation = tmp_path / "src/trainlab/evaluation/scores.py"
    evaluation.write_text(evaluation.read_text() + "\n\ndef _later():\n    from trainlab import brand_new_module\n")
    monkeypatch.setattr(stage_deps, "ROOT", tmp_path)
    monkeypatch.setattr(stage_deps, "PACKAGES", {"trainlab": tmp_path / "src/trainlab", "stages": tmp_path / "stages"})
    assert tmp_path / "src/trainlab/brand_new_module.py" in closure("evaluate")
    assert tmp_path / "src/trainlab/brand_new_module.py" not in closure("ensemble")


def test_the_command_prints_the_deps_and_checks_them() -> None:
    shown = subprocess.run([sys.executable, "-m", "trainlab.stage_deps"], capture_output=True, text=True,
                           check=True).stdout
    listed = yaml.safe_load(shown)
    assert listed["evaluate"] == as_deps(closure("evaluate")) and set(listed) == set(DVC_YAML["stages"])
    check = subprocess.run([sys.executable, "-m", "trainlab.stage_deps", "--check"], capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout == ""


def test_write_puts_the_closure_into_dvc_yaml_and_keeps_the_rest(tmp_path: Path) -> None:
    text = (ROOT / "dvc.yaml").read_text()
    broken = text.replace("      - src/trainlab/ensemble/combine.py\n", "", 1)
    assert broken != text
    copy = tmp_path / "dvc.yaml"
    copy.write_text(broken)
    assert stage_deps.differences(copy)
    stage_deps.write_deps(copy)
    assert stage_deps.differences(copy) == {} and copy.read_text() == text
