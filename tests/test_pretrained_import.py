"""`pretrain.from`: published ResNet weights (torchvision/timm layout, a .safetensors file) and
another trainlab project's backbone, imported with strict key matching and fine-tuned.

The weights files are written by the tests themselves (a ResNet-18 built here, its keys
renamed to torchvision's), never downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from trainlab.config.schema import ModelConfig
from trainlab.errors import CheckpointError, ParamsError
from trainlab.models import build_model, resolve_frozen
from trainlab.models.imported import import_network
from trainlab.models.store import load_model, read_checkpoint
from trainlab.testing import BIN, copy_project, make_project, run, small_params, trainlab, write_params

from helpers.console import console, error_line

RESNET18 = ModelConfig(arch="resnet18")


def torchvision_state(arch: str = "resnet18", channels: int = 3, classes: int = 1000, seed: int = 0,
                      batch_counters: bool = False) -> dict[str, torch.Tensor]:
    """A ResNet's state dict under torchvision's key names, as a published file holds it."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch=arch), (channels, 32, 32), classes, kind="image")
    for module in model.modules():   # running statistics that are not the defaults
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    renamed = {("fc." + key.removeprefix("head.linear.") if key.startswith("head.")
                else key.removeprefix("backbone.")): value.clone()
               for key, value in model.state_dict().items()}
    return {k: v for k, v in renamed.items() if batch_counters or not k.endswith("num_batches_tracked")}


# ------------------------------------------------------------------------------ the networks
@pytest.mark.parametrize("arch, keys, parameters", [("resnet18", 122, 11_689_512), ("resnet34", 218, 21_797_672)])
def test_resnets_have_torchvisions_layout_and_size(arch: str, keys: int, parameters: int) -> None:
    # torchvision's resnet18/34 at 3x224x224 with 1,000 classes: these key and parameter counts.
    state = torchvision_state(arch, batch_counters=True)
    assert len(state) == keys
    model = build_model(ModelConfig(arch=arch), (3, 224, 224), 1000, kind="image")
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert {"conv1.weight", "bn1.running_var", "layer2.0.downsample.0.weight", "layer4.1.bn2.bias",
            "fc.weight"} <= state.keys()
    assert model.block_names == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]
    for shape in [(1, 9, 13), (28, 28), (3, 64, 64)]:   # any size, any channels
        model = build_model(ModelConfig(arch=arch), shape, 4, kind="image").eval()
        assert model(torch.zeros(2, *shape)).shape == (2, 4)


def test_freeze_names_the_published_blocks_and_stem_means_conv1_and_bn1() -> None:
    model = build_model(RESNET18, (1, 16, 16), 3, kind="image")
    assert resolve_frozen(model, ("stem",)) == ["conv1", "bn1"]
    assert resolve_frozen(model, ("auto", "layer1", "layer2")) == ["conv1", "bn1", "layer1", "layer2"]
    assert resolve_frozen(model, 3) == ["conv1", "bn1", "layer1"]
    with pytest.raises(ParamsError, match="unknown block.*layer5; this backbone has conv1, bn1, layer1"):
        resolve_frozen(model, ("layer5",))
    # Gradual unfreezing thaws the named blocks from the head side: layer2, then layer1, ...
    from trainlab.training.transfer import GradualUnfreeze

    unfreeze = GradualUnfreeze(model, resolve_frozen(model, ("stem", "layer1", "layer2")), every=2)
    assert [unfreeze.still_frozen(epoch) for epoch in (0, 2, 4, 6, 8)] == [
        ["conv1", "bn1", "layer1", "layer2"], ["conv1", "bn1", "layer1"], ["conv1", "bn1"], ["conv1"], []]


# ------------------------------------------------------------------------------ the import
def test_a_torchvision_safetensors_file_imports_with_its_rgb_filters_summed_for_grey_input(tmp_path: Path) -> None:
    state = torchvision_state()   # no num_batches_tracked: an older file
    path = tmp_path / "resnet18.safetensors"
    save_file(state, str(path))
    network = import_network(path, RESNET18, (1, 20, 20), "image", ["a", "b"])
    imported = network.model.state_dict()
    assert network.layout == "torchvision" and len(network.class_names) == 1000
    torch.testing.assert_close(imported["backbone.conv1.weight"], state["conv1.weight"].sum(1, keepdim=True))
    for key in ("layer3.1.conv2.weight", "layer2.0.downsample.1.running_var", "bn1.bias"):
        assert torch.equal(imported["backbone." + key], state[key])
    assert torch.equal(imported["head.linear.weight"], state["fc.weight"])
    assert any("summed" in note for note in network.notes)
    # Five channels: the filters repeated and scaled by 3/5, as timm adapts them.
    five = import_network(path, RESNET18, (5, 20, 20), "image", ["a"]).model.state_dict()["backbone.conv1.weight"]
    torch.testing.assert_close(five, torch.cat([state["conv1.weight"]] * 2, 1)[:, :5] * 0.6)


def test_a_file_without_a_head_gets_a_new_one_for_the_target_classes(tmp_path: Path) -> None:
    path = tmp_path / "headless.safetensors"
    save_file({k: v for k, v in torchvision_state().items() if not k.startswith("fc.")}, str(path))
    network = import_network(path, RESNET18, (3, 16, 16), "image", ["cat", "dog", "owl"])
    assert network.class_names == ["cat", "dog", "owl"]
    assert network.model.state_dict()["head.linear.weight"].shape == (3, 512)


@pytest.mark.parametrize("change, says", [
    ("rename", "does not match model.arch resnet18: missing 1 key(s): layer4.1.bn2.weight; "
               "unexpected 1 key(s): layer4.1.bn3.weight"),
    # ResNet-34's 8 extra blocks: 2 convs and 2 batch norms (4 tensors each) apiece.
    ("resnet34", "does not match model.arch resnet18: unexpected 80 key(s): layer1.2.bn1.bias, "
                 "layer1.2.bn1.running_mean, layer1.2.bn1.running_var, layer1.2.bn1.weight, "
                 "layer1.2.bn2.bias, layer1.2.bn2.running_mean and 74 more"),
    ("shape", "1 tensor(s) do not fit model.arch resnet18: layer1.0.conv1.weight [64, 64, 5, 5] "
              "(needs [64, 64, 3, 3])"),
])
def test_a_file_that_does_not_fit_is_one_line_listing_the_keys(tmp_path: Path, change: str, says: str) -> None:
    state = torchvision_state("resnet34" if change == "resnet34" else "resnet18")
    if change == "rename":
        state["layer4.1.bn3.weight"] = state.pop("layer4.1.bn2.weight")
    elif change == "shape":
        state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as caught:
        import_network(path, RESNET18, (3, 16, 16), "image", ["a"])
    assert str(caught.value) == f"{path}: {says}"


@pytest.mark.parametrize("arch", ["auto", "cnn2d"])
def test_a_published_layout_needs_model_arch_resnet18_or_34(tmp_path: Path, arch: str) -> None:
    path = tmp_path / "resnet18.pt"
    torch.save(torchvision_state(), path)   # a plain .pt state dict reads the same way
    with pytest.raises(ParamsError, match=f"model.arch: '{arch}', but pretrain.from .* holds a ResNet in "
                                          "torchvision's layout; set model.arch to resnet18 or resnet34"):
        import_network(path, ModelConfig(arch=arch), (3, 16, 16), "image", ["a"])


@pytest.mark.parametrize("content, says", [
    (b"not a safetensors file", "not a readable safetensors file"),
])
def test_an_unreadable_or_wrong_kind_of_file_is_one_line(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "weights.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=says):
        import_network(path, RESNET18, (3, 16, 16), "image", ["a"])
    with pytest.raises(CheckpointError, match="is not a weights file; accepted: .safetensors, .pt, .pth"):
        import_network(tmp_path / "weights.onnx", RESNET18, (3, 16, 16), "image", ["a"])
    tensors = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(tensors))
    with pytest.raises(CheckpointError, match="neither a trainlab model nor a ResNet in torchvision/timm layout"):
        import_network(tensors, RESNET18, (3, 16, 16), "image", ["a"])


# ------------------------------------------------------------------------------ the stages
FOLDER = "data/own/shapes"
COLOURS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}


def draw_folder(root: Path, per_class: int = 10) -> None:
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def import_params(**overrides):
    return small_params(**{"data__name": "file", "data__file__path": FOLDER, "data__train_samples": None,
                           "data__file__normalize": "imagenet", "model__arch": "resnet18",
                           "pretrain__from": "data/own/resnet18.safetensors", "finetune__freeze": ["stem", "layer1"],
                           "finetune__epochs": 2, "finetune__linear_probe": False,
                           "finetune__linear_baseline": False, **overrides})


@pytest.fixture(scope="module")
def imported_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image folder, a torchvision-layout ResNet-18 file, prepared and imported (read-only)."""
    project = make_project(tmp_path_factory.mktemp("import") / "project", import_params())
    draw_folder(project / FOLDER)
    save_file(torchvision_state(), str(project / "data/own/resnet18.safetensors"))
    trainlab(["prepare"], project)
    out = trainlab(["pretrain"], project).stdout
    assert "pretrain: imported resnet18 from data/own/resnet18.safetensors (sha256 " in out
    assert "conv1: its 3 RGB filters summed" not in out   # RGB images: nothing to adapt
    return project


def test_pretrain_imports_the_file_and_finetune_reports_the_gain_over_scratch(imported_project: Path,
                                                                            tmp_path: Path) -> None:
    project = copy_project(imported_project, tmp_path / "project")
    pretrained, saved = load_model(project / "models/pretrained.pt")
    state = torchvision_state()
    digest = __import__("hashlib").sha256((project / "data/own/resnet18.safetensors").read_bytes()).hexdigest()
    assert saved["meta"]["imported_sha256"] == digest and saved["input_shape"] == [3, 16, 16]
    assert torch.equal(pretrained.state_dict()["backbone.layer4.0.conv1.weight"], state["layer4.0.conv1.weight"])
    assert json.loads((project / "reports/pretrain/curves.json").read_text()) == []
    assert digest in (project / "reports/pretrain/artifacts/imported.md").read_text()
    # The input convention the weights expect: ImageNet's mean/std on the 0-255 pixels.
    normalization = json.loads((project / "data/prepared/manifest.json").read_text())["inputs"]["normalization"]
    assert np.allclose(np.ravel(normalization["mean"]), [123.675, 116.28, 103.53], atol=1e-3)

    trainlab(["finetune"], project)
    tuned = read_checkpoint(project / "models/finetuned.pt")["state_dict"]
    frozen = ["backbone.conv1.weight", "backbone.bn1.running_mean", "backbone.layer1.1.conv2.weight"]
    for key in frozen:   # finetune.freeze [stem, layer1]: unchanged, batch-norm statistics too
        assert torch.equal(tuned[key], pretrained.state_dict()[key]), key
    assert not torch.equal(tuned["backbone.layer4.1.conv2.weight"], pretrained.state_dict()["backbone.layer4.1.conv2.weight"])
    details = json.loads((project / "reports/finetune/details.json").read_text())
    assert "transfer/gain" in details and isinstance(details["transfer/gain"], float)
    assert read_checkpoint(project / "models/baselines/scratch.pt")["model"]["arch"] == "resnet18"

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    run = client.search_runs(client.get_experiment_by_name("trainlab").experiment_id,
                             "tags.`trainlab.stage` = 'pretrain'")[0]
    assert run.data.tags["trainlab.pretrain.from_sha256"] == digest
    assert run.data.params["pretrain.from"] == "data/own/resnet18.safetensors"


def test_a_wrong_key_stops_pretrain_in_one_line_and_writes_nothing(imported_project: Path, tmp_path: Path) -> None:
    project = copy_project(imported_project, tmp_path / "project")
    before = (project / "models/pretrained.pt").read_bytes()
    state = torchvision_state()
    state["layer2.0.shortcut.0.weight"] = state.pop("layer2.0.downsample.0.weight")
    save_file(state, str(project / "data/own/resnet18.safetensors"))
    line = error_line(console(["pretrain"], project))
    assert line == ("error: data/own/resnet18.safetensors: does not match model.arch resnet18: missing 1 key(s): "
                    "layer2.0.downsample.0.weight; unexpected 1 key(s): layer2.0.shortcut.0.weight")
    assert (project / "models/pretrained.pt").read_bytes() == before


def test_a_timm_name_in_pretrain_from_says_how_to_get_a_file(imported_project: Path, tmp_path: Path) -> None:
    project = copy_project(imported_project, tmp_path / "project")
    write_params(project, import_params(pretrain__from="timm:resnet18.a1_in1k"))
    line = error_line(console(["pretrain"], project))
    assert "pretrain.from: 'timm:resnet18.a1_in1k' is a timm name, not a file" in line
    assert "trainlab fetch-weights timm:resnet18.a1_in1k" in line


@pytest.mark.slow
def test_the_weights_file_is_a_dvc_dependency_of_pretrain(imported_project: Path, tmp_path: Path) -> None:
    project = copy_project(imported_project, tmp_path / "project")

    def dvc(*args: str) -> str:
        return run([str(BIN / "dvc"), *args], project).stdout

    dvc("repro", "pretrain")
    assert "pretrain" not in json.loads(dvc("status", "--json"))
    save_file(torchvision_state(seed=1), str(project / "data/own/resnet18.safetensors"))
    changed = json.loads(dvc("status", "--json"))["pretrain"][0]["changed deps"]
    assert changed == {"data/own/resnet18.safetensors": "modified"}


# ------------------------------------------------------------------------------ series
def test_a_backbone_another_trainlab_project_pretrained_is_imported_and_finetuned(tmp_path: Path) -> None:
    """A team pretrains once (project A) and fine-tunes many small tasks (project B)."""
    first = make_project(tmp_path / "a", small_params())
    trainlab(["prepare"], first)
    trainlab(["pretrain"], first)
    # The small task: series of another length (64 steps, MNIST-1D's are 40), two classes.
    small_task = {"data__name": "file", "data__file__path": "data/own/series.npz", "data__train_samples": None,
                  "pretrain__from": "data/own/team_backbone.pt"}
    second = make_project(tmp_path / "b", small_params(**small_task))
    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    x = np.sin(np.linspace(0, 6, 64) * (1 + y[:, None])) + rng.normal(0, 0.3, (60, 64))
    np.savez(second / "data/own/series.npz", x=x.astype(np.float32), y=y)
    (second / "data/own/team_backbone.pt").write_bytes((first / "models/pretrained.pt").read_bytes())
    trainlab(["prepare"], second)
    assert "trainlab layout" in trainlab(["pretrain"], second).stdout
    theirs, _ = load_model(first / "models/pretrained.pt")
    ours, _ = load_model(second / "models/pretrained.pt")
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    trainlab(["finetune"], second)
    assert "transfer/gain" in json.loads((second / "reports/finetune/details.json").read_text())
    # A params.yaml that builds another network than the file's is one line naming the keys to set.
    write_params(second, small_params(**small_task, model__width=16))
    line = error_line(console(["pretrain"], second))
    assert line.endswith("holds another network than params.yaml's model section builds; set model.width: 8 "
                         "(what the file was trained with)")


def test_a_last_batch_of_one_sample_is_dropped_so_a_resnets_1x1_stage_can_train() -> None:
    from trainlab.engine.batches import step_plan

    # At 32 px ResNet-18's last stage is 1x1: batch norm cannot train on a batch of one.
    model = build_model(RESNET18, (1, 32, 32), 3, kind="image").train()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        model(torch.zeros(1, 1, 32, 32))
    assert step_plan(33, 32, world_size=1, grad_accum=1) == [(0, 32)]             # 1 left over: dropped
    assert step_plan(34, 32, world_size=1, grad_accum=1) == [(0, 32), (32, 34)]   # 2: kept
    assert step_plan(35, 16, world_size=2, grad_accum=1) == [(0, 16), (16, 32)]   # 3 over 2 ranks: dropped
    assert step_plan(1, 32, world_size=1, grad_accum=1) == [(0, 1)]               # a lone batch stays


def test_a_long_hub_error_is_cut_at_a_word() -> None:
    """fetch-weights quotes timm's error in its one line: the hub's run to 250+ characters."""
    from trainlab.errors import first_line

    hub = RuntimeError("An error happened while trying to locate the file on the Hub and we cannot find the "
                       "requested files in the local cache. Please check your connection and try again or make "
                       "sure your Internet connection is on.\nsecond line")
    shown = first_line(hub, limit=200)
    assert shown.endswith(" ...") and len(shown) <= 204 and "second line" not in shown
    assert hub.args[0].startswith(shown.removesuffix(" ...")) and shown.removesuffix(" ...")[-1] != " "
    assert first_line(RuntimeError("short"), limit=200) == "short" and first_line(KeyError()) == "KeyError"
