"""Models: every architecture's shapes and named blocks, freezing, saving/loading."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from trainlab.config.schema import ModelConfig
from trainlab.engine import fit
from trainlab.errors import CheckpointError, ParamsError
from trainlab.models import build_model, load_model, load_state, resolve_frozen, save_model, set_frozen

from helpers.engine import LENGTH, signal_data, train_spec, trainer_cfg, weights

SHAPES = {"logreg": (40,), "mlp": (40,), "cnn1d": (40,), "resnet1d": (40,), "cnn2d": (8, 8), "resnet2d": (8, 8)}
CHANNELS_FIRST = {"cnn1d": (2, 40), "resnet1d": (2, 40), "cnn2d": (3, 8, 8), "resnet2d": (3, 8, 8)}
BLOCKS = ["stem", "block1", "block2"]


def config(arch: str, **overrides) -> ModelConfig:
    return ModelConfig.model_validate({"arch": arch, "width": 6, "depth": 2, "kernel_size": 3, "dropout": 0.0,
                                       **overrides})


@pytest.mark.parametrize("arch", list(SHAPES))
def test_every_arch_maps_a_batch_to_class_logits(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(config(arch), SHAPES[arch], 5)
    x = torch.randn(7, *SHAPES[arch])
    assert model(x).shape == (7, 5)
    assert model.backbone(x).shape == (7, model.feature_dim)
    # Parameter-holding blocks, input side first; logistic regression is only a head.
    # Residual nets end on the pre-activation stack's final batch norm.
    expected = [] if arch == "logreg" else BLOCKS + (["norm"] if arch.startswith("resnet") else [])
    assert model.block_names == expected
    groups = [name for name, _ in model.layer_groups()]
    assert groups == [f"{i:02d}_{name}" for i, name in enumerate([*model.block_names, "head"])]
    if arch in CHANNELS_FIRST:       # explicit channel axis
        shaped = build_model(config(arch), CHANNELS_FIRST[arch], 5)
        assert shaped(torch.randn(4, *CHANNELS_FIRST[arch])).shape == (4, 5)


def test_2d_arch_on_1d_data_names_the_key() -> None:
    with pytest.raises(ParamsError, match=r"^model\.arch: 'cnn2d' .*\[40\].*cnn1d, resnet1d"):
        build_model(config("cnn2d"), (40,), 3)
    with pytest.raises(ParamsError, match=r"^model\.arch: 'resnet1d' .*cnn2d, resnet2d"):
        build_model(config("resnet1d"), (1, 8, 8), 3)


def test_resolve_frozen_by_count_and_by_name() -> None:
    model = build_model(config("resnet1d"), (40,), 3)
    assert resolve_frozen(model, 0) == []
    assert resolve_frozen(model, 2) == ["stem", "block1"]
    assert resolve_frozen(model, ("block2", "stem")) == ["block2", "stem"]
    with pytest.raises(ParamsError, match=r"^finetune\.freeze: unknown block\(s\) block9, head; "
                                          r"this backbone has stem, block1, block2, norm$"):
        resolve_frozen(model, ("stem", "block9", "head"))
    with pytest.raises(ParamsError, match=r"^finetune\.freeze: 5 blocks asked but the backbone has 4"):
        resolve_frozen(model, 5)


def test_frozen_blocks_keep_weights_and_batchnorm_statistics_through_a_fit() -> None:
    torch.manual_seed(0)
    model = build_model(config("resnet1d", batchnorm=True, dropout=0.1), (LENGTH,), 3)
    frozen = resolve_frozen(model, 2)
    set_frozen(model, frozen)
    before = weights(model)
    fit(model, signal_data(128, 0), signal_data(32, 1), train_spec(2, optimizer={"weight_decay": 0.1}),
        trainer_cfg(), seed=0)
    after = weights(model)

    def block_of(key: str) -> str:
        return key.split(".")[1] if key.startswith("backbone.") else "head"

    for key in before:
        if block_of(key) in frozen:   # weights, running_mean/var and num_batches_tracked alike
            assert torch.equal(before[key], after[key]), key
    for suffix in ("body.2.weight", "body.0.running_mean", "body.0.running_var"):
        assert not torch.equal(before[f"backbone.block2.{suffix}"], after[f"backbone.block2.{suffix}"])
    assert not torch.equal(before["head.linear.weight"], after["head.linear.weight"])
    # The frozen blocks stay in eval mode whenever the model is put in training mode.
    model.train()
    assert not model.backbone.stem.training and not model.backbone.block1.training
    assert model.backbone.block2.training and model.head.training
    assert {n.split(".")[1] for n, p in model.named_parameters() if not p.requires_grad} == set(frozen)

    set_frozen(model, [])
    model.train()
    assert all(p.requires_grad for p in model.parameters()) and model.backbone.stem.training


def test_save_and_load_round_trip_gives_equal_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = config("resnet1d", batchnorm=True)
    model = build_model(cfg, (40,), 3)
    for _ in range(3):                      # non-trivial batch-norm running statistics
        model(torch.randn(16, 40))
    model.eval()
    path = tmp_path / "model.pt"
    save_model(path, model, cfg, (40,), ["a", "b", "c"], meta={"stage": "test"})

    loaded, blob = load_model(path)
    x = torch.randn(9, 40)
    assert torch.equal(loaded(x), model(x))
    assert not loaded.training
    assert blob["class_names"] == ["a", "b", "c"] and blob["input_shape"] == [40]
    assert blob["meta"] == {"stage": "test"} and ModelConfig.model_validate(blob["model"]) == cfg
    assert "state_dict" in torch.load(path, weights_only=True)   # plain tensors and primitives


def test_equal_models_save_to_equal_bytes_whatever_the_file_name(tmp_path: Path) -> None:
    # DVC compares outputs by md5: a rerun that reproduces the weights must reproduce the file.
    torch.manual_seed(0)
    cfg = config("resnet1d", batchnorm=True)
    model = build_model(cfg, (40,), 3)
    first, second = tmp_path / "pretrained.pt", tmp_path / "elsewhere" / "other-name.pt"
    for path in (first, second):
        save_model(path, model, cfg, (40,), ["a", "b", "c"], meta={"stage": "test", "temperature": 1.5})
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:   # not named after the temporary file it was written to
        assert {name.split("/")[0] for name in archive.namelist()} == {"archive"}
    # The reference: different weights do give different bytes.
    with torch.no_grad():
        model.head.linear.weight[0, 0] += 1.0
    save_model(second, model, cfg, (40,), ["a", "b", "c"], meta={"stage": "test", "temperature": 1.5})
    assert first.read_bytes() != second.read_bytes()


def test_load_state_with_another_architecture_names_the_layer() -> None:
    state = build_model(config("cnn1d", width=6), (40,), 3).state_dict()
    wider = build_model(config("cnn1d", width=8), (40,), 3)
    with pytest.raises(CheckpointError, match=r"^ckpt\.pt: layer 'backbone\.stem\.1\.weight' has shape "
                                              r"\[6, 1, 3\] in the checkpoint but \[8, 1, 3\]"):
        load_state(wider, state, "ckpt.pt")
    deeper = build_model(config("cnn1d", depth=3), (40,), 3)
    with pytest.raises(CheckpointError, match=r"^ckpt\.pt: layer 'backbone\.block3\.body\.0\.weight' is missing"):
        load_state(deeper, state, "ckpt.pt")
    shallower = build_model(config("cnn1d", depth=1), (40,), 3)
    with pytest.raises(CheckpointError, match=r"layer 'backbone\.block2\.body\.0\.weight' is not in the configured"):
        load_state(shallower, state, "ckpt.pt")
    # A new head for another label space: skipping it loads the rest.
    other_head = build_model(config("cnn1d"), (40,), 7)
    load_state(other_head, state, "ckpt.pt", skip_prefixes=("head.",))
    assert torch.equal(other_head.backbone.stem[1].weight, state["backbone.stem.1.weight"])


def test_corrupt_model_file_raises_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="model.pt: corrupt"):
        load_model(path)
    with pytest.raises(CheckpointError, match="missing.pt: not found"):
        load_model(tmp_path / "missing.pt")


@pytest.mark.parametrize("arch", ["cnn1d", "resnet1d"])
def test_downsample_halves_the_resolution_in_that_many_layers_stem_first(arch: str) -> None:
    for downsample, length in [(0, 40), (1, 20), (2, 10), (3, 5)]:
        model = build_model(config(arch, downsample=downsample), (40,), 3)
        assert model.backbone.stem(torch.randn(2, 40)).shape[-1] == (20 if downsample else 40)
        before_pool = model.backbone[:-1]            # everything but the global pooling
        assert before_pool(torch.randn(2, 40)).shape == (2, 6, length)
    with pytest.raises(ParamsError, match=r"^model\.downsample: 4 halvings .* model\.depth 2 blocks give at most 3; "
                                          r"accepted: 0 to 3, or auto$"):
        build_model(config(arch, downsample=4), (40,), 3)


@pytest.mark.parametrize("arch, shape, positions", [
    ("resnet1d", (40,), 40),             # MNIST-1D: full resolution, as before
    ("resnet1d", (12, 29), 29),          # 12-channel series: full resolution
    ("resnet1d", (1000,), 250),          # a long series: halved twice
    ("resnet2d", (28, 28), 7 * 7),       # 28x28 images: halved twice
    ("resnet2d", (3, 32, 32), 8 * 8),    # 32x32 colour images: halved twice
    ("cnn2d", (3, 8, 8), 64),
])
def test_auto_downsample_keeps_at_most_256_steps_or_64_pixels(arch: str, shape: tuple, positions: int) -> None:
    model = build_model(config(arch, downsample="auto"), shape, 3)
    out = model.backbone[:-1](torch.randn(2, *shape))
    assert int(torch.tensor(out.shape[2:]).prod()) == positions


@pytest.mark.parametrize("arch", ["cnn1d", "resnet1d", "cnn2d", "resnet2d"])
@pytest.mark.parametrize("kernel", [2, 4, 5])
def test_even_kernels_keep_the_resolution_like_odd_ones(arch: str, kernel: int) -> None:
    """An even kernel used to grow every length by one, and resnet1d then failed on its skip sum."""
    from trainlab.models.networks import same_conv

    shape = (40,) if arch.endswith("1d") else (3, 9, 9)
    model = build_model(ModelConfig(arch=arch, width=8, depth=3, downsample=2, kernel_size=kernel), shape, 4)
    assert model(torch.randn(2, *shape)).shape == (2, 4)
    conv = torch.nn.Conv1d if arch.endswith("1d") else torch.nn.Conv2d
    for stride, length in ((1, 40), (2, 20), (1, 9), (2, 5)):
        layer = same_conv(conv, 1, 1, kernel, stride)
        x = torch.randn(1, 1, length) if conv is torch.nn.Conv1d else torch.randn(1, 1, length, length)
        assert layer(x).shape[-1] == -(-length // stride), (stride, length)
