"""ResNet-18 and ResNet-34 in the parameter layout torchvision and timm publish.

Published ImageNet weights for these networks share one state-dict layout: `conv1`, `bn1`,
`layer1` ... `layer4` (each a list of BasicBlocks with `conv1`, `bn1`, `conv2`, `bn2` and, where
the block changes resolution or width, `downsample.0` (a 1x1 conv) and `downsample.1` (its
batch norm)), and `fc`. trainlab builds them as a Classifier whose backbone holds exactly those
children, so a published file maps key for key: `X` -> `backbone.X`, `fc` -> `head.linear`
(trainlab.models.imported). The network is the published one whatever `model.width`, `depth`,
`kernel_size`, `downsample` and `activation` say; it takes any input size (the pooling is
adaptive) and any number of channels (the first conv is built for the data's).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from trainlab.models.classifier import AddChannel, Classifier

# Blocks per stage (He et al., 2016, table 1); each stage doubles the width and halves the resolution.
BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
PUBLISHED = tuple(BLOCKS)
WIDTHS = (64, 128, 256, 512)
# The input-side blocks `finetune.freeze: [stem]` (and `auto`) names in these networks.
STEM = ("conv1", "bn1")


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + downsample(x))."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = (None if stride == 1 and c_in == c_out else
                           nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def build_resnet(arch: str, input_shape: tuple[int, ...], num_classes: int, dropout: float) -> Classifier:
    """ResNet-18/34 for inputs of `input_shape` ([H, W] or [C, H, W]), initialised as torchvision does."""
    channels = input_shape[0] if len(input_shape) == 3 else 1
    blocks: OrderedDict[str, nn.Module] = OrderedDict(
        add_channel=AddChannel(len(input_shape) == 2),
        conv1=nn.Conv2d(channels, WIDTHS[0], 7, stride=2, padding=3, bias=False),
        bn1=nn.BatchNorm2d(WIDTHS[0]), relu=nn.ReLU(inplace=True),
        maxpool=nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    c_in = WIDTHS[0]
    for stage, (count, width) in enumerate(zip(BLOCKS[arch], WIDTHS), start=1):
        first_stride = 1 if stage == 1 else 2
        blocks[f"layer{stage}"] = nn.Sequential(*(BasicBlock(c_in if i == 0 else width, width,
                                                             first_stride if i == 0 else 1) for i in range(count)))
        c_in = width
    blocks["pool"] = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = Classifier(nn.Sequential(blocks), WIDTHS[-1], num_classes, dropout)
    for module in model.backbone.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return model
