"""One table of stages (trainlab.stage_registry) that the CLI, dvc.yaml, params logging and
MLflow datasets agree with, and stage commands that stay thin."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from trainlab.cli import COMMANDS
from trainlab.config.sections import STAGE_PARAMS
from trainlab.stage_registry import PIPELINE_STAGES, STAGES
from trainlab.testing import ROOT

DVC_STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
COMMAND_MAX_LINES = 30


def command_lengths() -> dict[str, int]:
    """Lines of each stage module's `command` function (its `def` to its last line)."""
    lengths = {}
    for stage in STAGES.values():
        tree = ast.parse((ROOT / "stages" / f"{stage.module}.py").read_text())
        (command,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "command"]
        lengths[stage.name] = command.end_lineno - command.lineno + 1
    return lengths


def test_the_pipeline_stages_are_dvc_yamls_in_its_order_with_its_commands() -> None:
    assert list(PIPELINE_STAGES) == list(DVC_STAGES)
    assert all(DVC_STAGES[name]["cmd"] == f"trainlab {name}" for name in PIPELINE_STAGES)
    assert list(STAGE_PARAMS) == list(PIPELINE_STAGES)
    assert list(COMMANDS) == list(STAGES) and all(COMMANDS[name] == s.help for name, s in STAGES.items())


def test_upstream_stages_are_the_ones_dvc_runs_before_it() -> None:
    def reads(name: str, up: str) -> bool:   # a dep of `name` is an output of `up`
        outs = [Path(next(iter(o)) if isinstance(o, dict) else o) for o in DVC_STAGES[up].get("outs", [])]
        return any(Path(str(d)) == o or o in Path(str(d)).parents for d in DVC_STAGES[name].get("deps", [])
                   for o in outs)

    before: dict[str, set[str]] = {}
    for name in DVC_STAGES:   # dvc.yaml lists a stage after those it reads
        direct = {up for up in before if reads(name, up)}
        before[name] = direct.union(*(before[up] for up in direct))
    assert {name: set(stage.upstream) for name, stage in PIPELINE_STAGES.items()} == before


def test_every_stage_command_is_thin() -> None:
    lengths = command_lengths()
    assert set(lengths) == set(STAGES)
    assert {name: n for name, n in lengths.items() if n > COMMAND_MAX_LINES} == {}


def test_the_length_check_reads_the_real_function(tmp_path: Path) -> None:
    # A command of 31 lines is caught: the measure is def-to-end, docstring and blank lines included.
    body = "\n".join(f"    x{i} = {i}" for i in range(30))
    tree = ast.parse(f"def command():\n{body}\n")
    (command,) = tree.body
    assert command.end_lineno - command.lineno + 1 == 31 > COMMAND_MAX_LINES
