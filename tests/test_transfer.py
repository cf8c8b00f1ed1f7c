"""Transfer learning: frozen blocks stay put, gradual unfreezing follows its schedule,
the backbone trains at a fraction of the head's lr, a mismatched checkpoint is named,
and the finetune stage writes its model, baselines, gain metric and MLflow child runs.

In-process tests call `trainlab.training.transfer` inside a copy of the shared prepared project
(prepare and pretrain done); the stage tests run the real `trainlab finetune`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from trainlab import paths
from trainlab.config import load_params
from trainlab.data import load_split
from trainlab.engine import Hook, LoopState
from trainlab.errors import CheckpointError
from trainlab.models import load_model, read_checkpoint, resolve_frozen
from trainlab.testing import copy_project, small_params, trainlab, write_params
from trainlab.training import finish
from trainlab.training.transfer import finetune, finetune_request, load_pretrained

from helpers.tracking import label


@pytest.fixture(scope="module")
def work_copy(prepared_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One copy of the prepared project shared by this module's in-process tests."""
    return copy_project(prepared_project, tmp_path_factory.mktemp("transfer") / "project")


@pytest.fixture
def in_copy(work_copy: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(work_copy)
    return work_copy


def params_with(**overrides):
    """The copy's params.yaml (the shrunk real one) with dotted-key overrides."""
    return load_params(paths.PARAMS, overrides={"finetune.epochs": 2, **overrides})


def run_finetune(params, hooks=()):
    trained = finetune(finetune_request(params, hooks=hooks), paths.PRETRAINED)
    finish(trained)   # drop the resume checkpoint so the next test starts afresh
    return trained


def initial_state(params) -> dict[str, torch.Tensor]:
    """The model finetune() starts from: pretrained backbone, seeded fresh head."""
    manifest = json.loads(paths.MANIFEST.read_text())
    model = load_pretrained(params, paths.PRETRAINED, tuple(manifest["input_shape"]),
                            manifest["tasks"]["target"]["num_classes"])
    return {k: v.clone() for k, v in model.state_dict().items()}


def block_of(key: str) -> str:
    """'backbone.block1.body.0.weight' -> 'block1'; 'head.linear.weight' -> 'head'."""
    parts = key.split(".")
    return parts[1] if parts[0] == "backbone" else parts[0]


def changed_blocks(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, bool]:
    """Per block: did any tensor (weights, biases, BN running stats) change?"""
    changed: dict[str, bool] = {}
    for key, value in before.items():
        differs = not torch.equal(value, after[key])
        changed[block_of(key)] = changed.get(block_of(key), False) or differs
    return changed


@pytest.mark.parametrize("freeze", [["stem", "block1"], 2], ids=["by-name", "by-count"])
def test_frozen_blocks_do_not_move(in_copy: Path, freeze) -> None:
    params = params_with(**{"finetune.freeze": freeze, "finetune.unfreeze_every": None})
    before = initial_state(params)
    trained = run_finetune(params)
    after = trained.model.state_dict()

    assert resolve_frozen(trained.model, params.finetune.freeze) == ["stem", "block1"]
    # Every tensor of the frozen blocks, BN running means/vars and batch counters included.
    frozen_keys = [k for k in before if block_of(k) in {"stem", "block1"}]
    assert any("running_mean" in k for k in frozen_keys) and any("running_var" in k for k in frozen_keys)
    for key in frozen_keys:
        assert torch.equal(before[key], after[key]), f"frozen tensor {key} changed"
    changed = changed_blocks(before, after)
    assert changed == {"stem": False, "block1": False, "block2": True, "norm": True, "head": True}
    # The trainable block's BN statistics did update (it was in train mode).
    running = [k for k in before if k.startswith("backbone.block2") and "running_mean" in k]
    assert running and all(not torch.equal(before[k], after[k]) for k in running)


class RequiresGradRecorder(Hook):
    """Per epoch start: which backbone blocks are trainable, and whether they are in train mode."""

    def __init__(self) -> None:
        self.trainable: list[dict[str, bool]] = []

    def on_epoch_start(self, state: LoopState) -> None:
        model = state.model
        self.trainable.append({name: all(p.requires_grad for p in model.backbone.get_submodule(name).parameters())
                               for name in model.block_names})


def test_gradual_unfreezing_follows_schedule(in_copy: Path) -> None:
    params = params_with(**{"finetune.freeze": ["stem", "block1"], "finetune.unfreeze_every": 1,
                            "finetune.epochs": 3})
    recorder = RequiresGradRecorder()
    before = initial_state(params)
    trained = run_finetune(params, hooks=[recorder])

    # Epoch 0: both frozen; epoch 1: block1 (next to the head) thawed first; epoch 2: all.
    assert recorder.trainable == [
        {"stem": False, "block1": False, "block2": True, "norm": True},
        {"stem": False, "block1": True, "block2": True, "norm": True},
        {"stem": True, "block1": True, "block2": True, "norm": True},
    ]
    assert len(trained.result.history) == 3
    # Thawed blocks really trained afterwards.
    assert changed_blocks(before, trained.model.state_dict()) == {
        "stem": True, "block1": True, "block2": True, "norm": True, "head": True}


class LrRecorder(Hook):
    """The optimizer's lr per named param group, at every step."""

    def __init__(self) -> None:
        self.initial: dict[str, float] = {}
        self.members: dict[str, set[int]] = {}
        self.per_step: list[dict[str, float]] = []

    def on_fit_start(self, state: LoopState) -> None:
        self.initial = {g["name"]: g["initial_lr"] for g in state.optimizer.param_groups}
        self.members = {g["name"]: {id(p) for p in g["params"]} for g in state.optimizer.param_groups}

    def on_step_end(self, state: LoopState) -> None:
        self.per_step.append({g["name"]: g["lr"] for g in state.optimizer.param_groups})


def test_backbone_lr_is_scaled(in_copy: Path) -> None:
    lr, scale = 4.0e-3, 0.25
    params = params_with(**{"finetune.optimizer.lr": lr, "finetune.backbone_lr_scale": scale,
                            "finetune.optimizer.reference_batch_size": None})
    recorder = LrRecorder()
    trained = run_finetune(params, hooks=[recorder])

    assert recorder.initial == {"backbone": pytest.approx(lr * scale), "head": pytest.approx(lr)}
    assert recorder.per_step, "no optimizer step recorded"
    for lrs in recorder.per_step:   # warmup and cosine scale both groups alike
        assert lrs["backbone"] == pytest.approx(lrs["head"] * scale, rel=1e-12)
    assert trained.result.steps == len(recorder.per_step)
    # The groups hold exactly the backbone's and the head's parameters.
    assert recorder.members == {"backbone": {id(p) for p in trained.model.backbone.parameters()},
                                "head": {id(p) for p in trained.model.head.parameters()}}


def first_shape_mismatch(params, checkpoint: Path) -> str:
    """Reference: the first layer of the checkpoint whose shape differs from the configured model."""
    manifest = json.loads(paths.MANIFEST.read_text())
    from trainlab.models import build_model

    model = build_model(params.model, tuple(manifest["input_shape"]), 10)
    own = model.state_dict()
    state = read_checkpoint(checkpoint)["state_dict"]
    return next(k for k, v in state.items() if not k.startswith("head.") and own[k].shape != v.shape)


def test_pretrained_of_other_width_names_the_layer(in_copy: Path) -> None:
    params = params_with(**{"model.width": 16})
    layer = first_shape_mismatch(params, paths.PRETRAINED)
    assert layer == "backbone.stem.1.weight"
    with pytest.raises(CheckpointError) as caught:
        finetune(finetune_request(params), paths.PRETRAINED)
    assert f"'{layer}'" in str(caught.value)
    assert "[8, 1, 5]" in str(caught.value) and "[16, 1, 5]" in str(caught.value)


def test_cli_width_mismatch_is_one_line(prepared_project: Path, tmp_path: Path) -> None:
    project = copy_project(prepared_project, tmp_path / "project")
    write_params(project, small_params(model__width=16))
    result = trainlab(["finetune"], project, check=False)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "'backbone.stem.1.weight'" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (project / paths.FINETUNED).exists()


# ----------------------------------------------------------------------------- the stage
@pytest.fixture(scope="module")
def finetuned_project(prepared_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = copy_project(prepared_project, tmp_path_factory.mktemp("finetune-stage") / "project")
    trainlab(["finetune"], project)
    return project


def val_accuracy(model_file: Path, project: Path) -> float:
    """Independent reference: load the saved model and score it on the val split."""
    model, _ = load_model(model_file)
    val = load_split(project / paths.PREPARED, "target", "val")
    with torch.inference_mode():
        predicted = model(torch.as_tensor(val.x)).argmax(-1).numpy()
    return float((predicted == val.y).mean())


def one_sample(project: Path) -> float:
    """One val sample's share of an accuracy. The reference scores the split in one batch,
    the stage in its own batches and threads: fp32 logits differ in their last bits, so a
    prediction whose two best logits tie to within an ulp may flip (issue 31)."""
    return 1 / len(load_split(project / paths.PREPARED, "target", "val").y) + 1e-9


def test_finetune_stage_outputs(finetuned_project: Path) -> None:
    project = finetuned_project
    assert (project / paths.FINETUNED).is_file() and (project / paths.SCRATCH).is_file()
    metrics = json.loads((project / "reports/finetune/details.json").read_text())
    tuned_acc = val_accuracy(project / paths.FINETUNED, project)
    scratch_acc = val_accuracy(project / paths.SCRATCH, project)
    one = one_sample(project)   # a recomputed accuracy: up to one flipped near-tie
    assert metrics["val/acc"] == pytest.approx(tuned_acc, abs=one)
    assert metrics["scratch/val_acc"] == pytest.approx(scratch_acc, abs=one)
    assert metrics["transfer/gain"] == pytest.approx(tuned_acc - scratch_acc, abs=2 * one)
    assert 0.0 <= metrics["probe/val_acc"] <= 1.0
    assert metrics["transfer/gain_over_probe"] == pytest.approx(tuned_acc - metrics["probe/val_acc"], abs=one)
    # The linear baseline is a linear model on the raw inputs, saved and scored like the others.
    linear, blob = load_model(project / paths.LINEAR)
    assert blob["model"]["arch"] == "logreg" and not any(isinstance(m, torch.nn.Conv1d) for m in linear.modules())
    assert metrics["linear/val_acc"] == pytest.approx(val_accuracy(project / paths.LINEAR, project), abs=one)
    assert metrics["transfer/gain_over_linear"] == pytest.approx(tuned_acc - metrics["linear/val_acc"], abs=one)
    # The resume checkpoints are gone once the outputs are written.
    assert not list((project / paths.RESUME).glob("finetune*.pt"))
    curves = json.loads((project / "reports/finetune/curves.json").read_text())
    assert [row["epoch"] for row in curves] == list(range(1, metrics["epochs_run"] + 1))


def test_finetune_stage_child_runs(finetuned_project: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{finetuned_project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(yaml.safe_load((finetuned_project / "params.yaml").read_text())
                                               ["tracking"]["experiment"])
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if label(r) == "finetune"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent_id = parents[0].info.run_id
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id}
    assert set(children) == {"finetune scratch baseline", "finetune linear probe", "finetune linear baseline"}
    assert all(r.info.status == "FINISHED" for r in children.values())
    assert children["finetune linear baseline"].data.params["model.arch"] == "logreg"   # what it trained
    assert children["finetune scratch baseline"].data.params["model.arch"] != "logreg"
    metrics = json.loads((finetuned_project / "reports/finetune/details.json").read_text())
    assert children["finetune linear probe"].data.metrics["final.val.acc"] == pytest.approx(metrics["probe/val_acc"])
    assert (children["finetune scratch baseline"].data.metrics["final.val.acc"]
            == pytest.approx(metrics["scratch/val_acc"]))
    assert parents[0].data.metrics["final.transfer.gain"] == pytest.approx(metrics["transfer/gain"])
    # The saved baseline is what the scratch child run trained.
    assert val_accuracy(finetuned_project / paths.SCRATCH, finetuned_project) == pytest.approx(
        children["finetune scratch baseline"].data.metrics["final.val.acc"], abs=one_sample(finetuned_project))
