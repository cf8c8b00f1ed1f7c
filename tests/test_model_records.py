"""Every model file a stage reads is the one its producer recorded: swapped files and a
damaged members.json are one line, never a silent score or a traceback.

pretrain, finetune and ensemble write models/manifests/<stage>.json (SHA-256 of each model
file); the search writes models/search/members.json. Before this, evaluate scored a
pretrained.pt copied over finetuned.pt as the fine-tuned model, ensemble combined swapped
search members, and a members.json without `rank` ended ensemble in `KeyError: 'rank'`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from trainlab import paths
from trainlab.config.schema import ModelConfig
from trainlab.errors import CheckpointError
from trainlab.models import build_model, save_model
from trainlab.testing import copy_project

from helpers.console import error_line, invoke, without_tracking_uri


# ------------------------------------------------------------------------------ in-process
@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with a pretrained and a finetuned model file, each recorded."""
    from trainlab.models import write_manifest

    monkeypatch.chdir(tmp_path)
    cfg = ModelConfig(arch="mlp", width=4, depth=1)
    for path, seed in ((paths.PRETRAINED, 0), (paths.FINETUNED, 1), (paths.SCRATCH, 2)):
        torch.manual_seed(seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_model(path, build_model(cfg, (6,), 3), cfg, (6,), ["a", "b", "c"])
    write_manifest("pretrain", [paths.PRETRAINED])
    write_manifest("finetune", [paths.FINETUNED, paths.SCRATCH])
    return tmp_path


def test_recorded_files_pass_and_a_copy_of_another_is_refused_by_name(models_dir: Path) -> None:
    from trainlab.models import check_recorded

    for path in (paths.PRETRAINED, paths.FINETUNED, paths.SCRATCH):
        check_recorded(path)
    shutil.copyfile(paths.PRETRAINED, paths.FINETUNED)
    with pytest.raises(CheckpointError) as raised:
        check_recorded(paths.FINETUNED)
    assert str(raised.value) == (
        "models/finetuned.pt: not the file finetune wrote (its SHA-256 differs from the one in "
        "models/manifests/finetune.json); restore it with `dvc checkout models/finetuned.pt` or rerun "
        "`dvc repro finetune`")


def test_a_file_the_last_run_did_not_write_or_a_missing_manifest_is_refused(models_dir: Path) -> None:
    from trainlab.models import check_recorded, write_manifest

    write_manifest("finetune", [paths.FINETUNED])   # the last finetune trained no scratch baseline
    with pytest.raises(CheckpointError, match=r"^models/baselines/scratch.pt: models/manifests/finetune.json does "
                                              r"not list it, so it is not a file the last finetune wrote; rerun "):
        check_recorded(paths.SCRATCH)
    paths.model_manifest("pretrain").unlink()
    with pytest.raises(CheckpointError, match=r"^models/manifests/pretrain.json: not found, so no model file of "
                                              r"pretrain can be checked; rerun `dvc repro pretrain`$"):
        check_recorded(paths.PRETRAINED)


@pytest.mark.parametrize(("text", "problem"), [
    ('[{"file": "top1.pt", "slot": 0}]', "entry 1 has no rank (a number from 1)"),
    ('[{"rank": "1", "file": "top1.pt"}]', "entry 1 has no rank (a number from 1)"),
    ('[{"rank": 1}]', "entry 1 has no file name in its folder"),
    ('[{"rank": 1, "file": "../../pretrained.pt"}]', "entry 1 has no file name in its folder"),
    ('[{"rank": 1, "file": "top1.pt", "sha256": 7}]', "entry 1 has a sha256 that is not a SHA-256"),
    ('{"rank": 1, "file": "top1.pt"}', "not a list of the top-k models"),
    ("[]", "not a list of the top-k models"),
    ("[1, 2]", "entry 1 is not a mapping"),
    ('[{"rank": 1, "fi', "not JSON: "),
    ("\udcff", "not JSON: "),
], ids=["no-rank", "rank-text", "no-file", "file-outside", "bad-sha", "object", "empty", "numbers", "torn",
        "bytes"])
def test_a_malformed_members_json_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str,
                                              problem: str) -> None:
    from trainlab.models import read_members

    monkeypatch.chdir(tmp_path)
    paths.SEARCH_MODELS.mkdir(parents=True)
    paths.SEARCH_MEMBERS.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(CheckpointError) as raised:
        read_members()
    line = str(raised.value)
    assert line.startswith(f"models/search/members.json: damaged ({problem}"), line
    assert line.endswith("restore it with `dvc checkout models/search/members.json` or rerun `dvc repro search`")
    assert "\n" not in line


# --------------------------------------------------------------------------- the stages
@pytest.fixture
def in_copy(ensembled_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the ensembled project as the working directory."""
    project = copy_project(ensembled_project, tmp_path / "project")
    monkeypatch.chdir(project)
    without_tracking_uri(monkeypatch)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield project
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


SWAPPED_FINETUNED = ("error: models/finetuned.pt: not the file finetune wrote (its SHA-256 differs from the one in "
                     "models/manifests/finetune.json); restore it with `dvc checkout models/finetuned.pt` or rerun "
                     "`dvc repro finetune`")


@pytest.mark.slow
def test_evaluate_refuses_a_pretrained_model_copied_over_the_finetuned_one(in_copy: Path) -> None:
    shutil.copyfile(paths.PRETRAINED, paths.FINETUNED)
    assert error_line(invoke(["evaluate"])) == SWAPPED_FINETUNED
    assert not (in_copy / "reports/evaluate/metrics.json").exists()


@pytest.mark.slow
def test_ensemble_refuses_a_pretrained_model_copied_over_the_finetuned_one(in_copy: Path) -> None:
    before = (in_copy / paths.ENSEMBLE).read_bytes()
    shutil.copyfile(paths.PRETRAINED, paths.FINETUNED)
    assert error_line(invoke(["ensemble"])) == SWAPPED_FINETUNED
    assert (in_copy / paths.ENSEMBLE).read_bytes() == before


@pytest.mark.slow
def test_swapped_search_members_and_ensemble_files_are_refused(in_copy: Path) -> None:
    top1, top2 = paths.SEARCH_MODELS / "top1.pt", paths.SEARCH_MODELS / "top2.pt"
    first, second = top1.read_bytes(), top2.read_bytes()
    top1.write_bytes(second)
    top2.write_bytes(first)
    assert error_line(invoke(["ensemble"])) == (
        "error: models/search/top1.pt: not the file search wrote (its SHA-256 differs from the one in "
        "models/search/members.json); restore it with `dvc checkout models/search/top1.pt` or rerun "
        "`dvc repro search`")
    top1.write_bytes(first)
    top2.write_bytes(second)
    shutil.copyfile(paths.FINETUNED, paths.ENSEMBLE)   # a single model where the ensemble should be
    assert error_line(invoke(["evaluate"])).startswith("error: models/ensemble.pt: not the file ensemble wrote ")


@pytest.mark.slow
def test_finetune_and_search_refuse_a_model_copied_over_the_pretrained_one(in_copy: Path) -> None:
    shutil.copyfile(paths.SEARCH_MODELS / "top1.pt", paths.PRETRAINED)   # right shape, wrong file
    expected = ("error: models/pretrained.pt: not the file pretrain wrote (its SHA-256 differs from the one in "
                "models/manifests/pretrain.json); restore it with `dvc checkout models/pretrained.pt` or rerun "
                "`dvc repro pretrain`")
    assert error_line(invoke(["finetune"])) == expected
    assert error_line(invoke(["search"])) == expected


@pytest.mark.slow
@pytest.mark.parametrize("members", [[{"file": "top1.pt", "slot": 0}], {"top1.pt": 1}, [{"rank": 1}]],
                         ids=["no-rank", "mapping", "no-file"])
def test_ensemble_with_a_malformed_members_json_is_one_line(in_copy: Path, members) -> None:
    paths.SEARCH_MEMBERS.write_text(json.dumps(members))
    line = error_line(invoke(["ensemble"]))
    assert line.startswith("error: models/search/members.json: damaged ("), line
