"""The networks `model.arch` names, each a Classifier (trainlab.models.classifier): trainlab's own
(MLP, 1-D/2-D CNNs and residual nets) built here, the published ResNet-18/34 in models/resnet.py.

Block names (`stem`, `block1`, ..., `norm` (residual nets), `pool`) are what params.yaml uses to freeze parts
of a pretrained backbone, and what the diagnosis uses to report per-layer gradients.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from trainlab.config.schema import ModelConfig
from trainlab.errors import ParamsError
from trainlab.models.classifier import AddChannel, Classifier
from trainlab.models.resnet import PUBLISHED, STEM, build_resnet

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


# `arch: auto`: the network made for each kind of data (prepare decides the kind).
AUTO_ARCH = {"table": "mlp", "series": "resnet1d", "image": "resnet2d"}


def resolve_arch(cfg: ModelConfig, kind: str) -> ModelConfig:
    """`cfg` with `arch: auto` replaced by the network for data of `kind`."""
    return cfg.model_copy(update={"arch": AUTO_ARCH[kind]}) if cfg.arch == "auto" else cfg


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int,
                kind: str = "series") -> Classifier:
    """Construct the configured architecture for inputs of `input_shape` (without batch dim).

    The model keeps the resolved config it was built from (`model.config`), which its file
    records, so a saved `arch: auto` model rebuilds as the network it is."""
    cfg = resolve_arch(cfg, kind)
    model = _build(cfg, input_shape, num_classes)
    model.config = cfg
    return model


def _build(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    act = ACTIVATIONS[cfg.activation]
    if cfg.arch in PUBLISHED:
        if len(input_shape) not in (2, 3):
            raise ParamsError(f"model.arch: '{cfg.arch}' needs an image [height, width] or [channels, height, width], "
                              f"but the data has shape {list(input_shape)}; accepted for this data: "
                              f"{'cnn1d, resnet1d' if len(input_shape) <= 2 else 'cnn2d, resnet2d'}, mlp, logreg")
        return build_resnet(cfg.arch, input_shape, num_classes, cfg.dropout)
    if cfg.arch == "logreg":
        flat = int(torch.tensor(input_shape).prod())
        return Classifier(nn.Sequential(OrderedDict(flatten=nn.Flatten())), flat, num_classes, 0.0)
    if cfg.arch == "mlp":
        return _mlp(cfg, input_shape, num_classes, act)
    dims = 1 if cfg.arch.endswith("1d") else 2
    channels = _channels(cfg.arch, input_shape, dims)
    residual = cfg.arch.startswith("resnet")
    conv = nn.Conv1d if dims == 1 else nn.Conv2d
    norm = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d) if cfg.batchnorm else None
    kernel = AUTO_KERNEL[dims] if cfg.kernel_size == "auto" else cfg.kernel_size
    halvings = auto_downsample(input_shape, dims, cfg.depth) if cfg.downsample == "auto" else cfg.downsample
    if halvings > cfg.depth + 1:
        raise ParamsError(f"model.downsample: {halvings} halvings asked but the stem and model.depth "
                          f"{cfg.depth} blocks give at most {cfg.depth + 1}; accepted: 0 to {cfg.depth + 1}, or auto")
    # Halvings from the input side: the stem first (as in image ResNets), then the blocks.
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    blocks["stem"] = nn.Sequential(
        AddChannel(len(input_shape) == dims),
        same_conv(conv, channels, cfg.width, kernel, stride=2 if halvings >= 1 else 1, bias=norm is None),
        *( [norm(cfg.width)] if norm else []), act())
    for i in range(1, cfg.depth + 1):
        stride = 2 if i < halvings else 1
        block = ResidualBlock if residual else PlainBlock
        blocks[f"block{i}"] = block(conv, norm, act, cfg.width, kernel, stride)
    if residual:   # pre-activation blocks end on a bare sum: normalise and activate it once
        blocks["norm"] = nn.Sequential(*([norm(cfg.width)] if norm else []), act())
    pool = nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)
    blocks["pool"] = nn.Sequential(pool, nn.Flatten())
    return Classifier(nn.Sequential(blocks), cfg.width, num_classes, cfg.dropout)


# `downsample: auto` halves the resolution in the first layers (the stem, then blocks)
# until at most this many positions remain: the cost of a conv block grows with them, its receptive field does not
# need more. Series keep up to 256 steps (MNIST-1D's 40 keep full resolution, 1,000 steps
# are halved twice); images up to 64 pixels, the 8x8 maps that small-image ResNets end on
# (28x28 becomes 14x14, then 7x7; 32x32 becomes 16x16, then 8x8; 8x8 stays).
AUTO_MAX_POSITIONS = {1: 256, 2: 64}
# `kernel_size: auto`: 5 steps for series, the standard 3x3 for images (a 5x5 kernel costs
# 2.8x as much, and two stacked 3x3 kernels already see 5x5).
AUTO_KERNEL = {1: 5, 2: 3}


def auto_downsample(input_shape: tuple[int, ...], dims: int, depth: int) -> int:
    """How many layers (the stem, then blocks) halve the resolution under `downsample: auto`."""
    positions = int(torch.tensor(input_shape[-dims:]).prod())
    halvings = 0
    while positions > AUTO_MAX_POSITIONS[dims] and halvings < depth + 1:
        positions = max(1, positions // 2 ** dims)
        halvings += 1
    return halvings


def _mlp(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int, act) -> Classifier:
    flat = int(torch.tensor(input_shape).prod())
    def layer(n_in: int) -> list[nn.Module]:
        return [nn.Linear(n_in, cfg.width), *([nn.BatchNorm1d(cfg.width)] if cfg.batchnorm else []), act()]
    blocks: OrderedDict[str, nn.Module] = OrderedDict(stem=nn.Sequential(nn.Flatten(), *layer(flat)))
    for i in range(1, cfg.depth + 1):
        blocks[f"block{i}"] = nn.Sequential(*layer(cfg.width), nn.Dropout(cfg.dropout))
    return Classifier(nn.Sequential(blocks), cfg.width, num_classes, cfg.dropout)


def _channels(arch: str, input_shape: tuple[int, ...], dims: int) -> int:
    if len(input_shape) == dims:
        return 1
    if len(input_shape) == dims + 1:
        return input_shape[0]
    need = "a sequence [length] or [channels, length]" if dims == 1 else "an image [height, width] or [channels, height, width]"
    raise ParamsError(f"model.arch: '{arch}' needs {need}, but the data has shape {list(input_shape)}; "
                      f"accepted for this data: {'cnn1d, resnet1d' if len(input_shape) <= 2 else 'cnn2d, resnet2d'}, mlp, logreg")


def same_conv(conv: type[nn.Conv1d] | type[nn.Conv2d], c_in: int, c_out: int, kernel: int,
              stride: int = 1, bias: bool = True) -> nn.Module:
    """A convolution that keeps the resolution (stride 1) or halves it rounding up (stride 2).

    An odd kernel pads kernel // 2 on each side. An even one needs one value less on the
    left than on the right: padded symmetrically it grows every length by one, and a
    residual block's sum with its skip path fails on the mismatch.
    """
    if kernel % 2:
        return conv(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=bias)
    left, right = kernel // 2 - 1, kernel // 2
    pad = nn.ConstantPad1d((left, right), 0.0) if conv is nn.Conv1d else nn.ConstantPad2d((left, right) * 2, 0.0)
    return nn.Sequential(pad, conv(c_in, c_out, kernel, stride=stride, padding=0, bias=bias))


class PlainBlock(nn.Module):
    """conv -> norm -> act (stride 2 halves the resolution)."""

    def __init__(self, conv, norm, act, width: int, kernel: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(same_conv(conv, width, width, kernel, stride, bias=norm is None),
                                  *([norm(width)] if norm else []), act())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResidualBlock(nn.Module):
    """Pre-activation residual block (He et al., 2016): x + conv(act(norm(conv(act(norm(x)))))).

    Normalisation and activation sit inside the branch, so the skip path is a bare sum: the
    gradient reaches every earlier block unscaled, even through saturating activations
    (a post-activation block multiplies it by sigmoid' <= 0.25 once per block).
    """

    def __init__(self, conv, norm, act, width: int, kernel: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            *([norm(width)] if norm else []), act(),
            same_conv(conv, width, width, kernel, stride, bias=norm is None),
            *([norm(width)] if norm else []), act(),
            same_conv(conv, width, width, kernel, bias=True))
        self.skip = nn.Identity() if stride == 1 else conv(width, width, 1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


def resolve_frozen(model: Classifier, freeze: int | tuple[str, ...]) -> list[str]:
    """Block names to freeze: given by name, or the first `freeze` blocks from the input side.

    `stem` (and `auto`, which means the stem) names a published ResNet's `conv1` and `bn1`."""
    names = model.block_names
    if not isinstance(freeze, int):
        stem = STEM if "conv1" in names else ("stem",)
        freeze = tuple(dict.fromkeys(part for name in freeze
                                     for part in (stem if name in ("stem", "auto") else (name,))))
    if isinstance(freeze, int):
        if freeze > len(names):
            raise ParamsError(f"finetune.freeze: {freeze} blocks asked but the backbone has "
                              f"{len(names)}: {', '.join(names)}")
        return names[:freeze]
    unknown = [n for n in freeze if n not in names]
    if unknown:
        raise ParamsError(f"finetune.freeze: unknown block(s) {', '.join(unknown)}; "
                          f"this backbone has {', '.join(names)}")
    return list(freeze)


def set_frozen(model: Classifier, names: list[str]) -> None:
    """Freeze exactly these backbone blocks (weights and batch-norm statistics); unfreeze the rest."""
    model.frozen_blocks = set(names)
    for name in model.block_names:
        for param in model.backbone.get_submodule(name).parameters():
            param.requires_grad_(name not in model.frozen_blocks)
    model.train(model.training)

