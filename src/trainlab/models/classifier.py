"""The model every architecture builds: a backbone of named blocks plus a linear head.

Block names (`stem`, `block1`, ... in trainlab's networks; `conv1`, `bn1`, `layer1` ... in the
published ResNets) are what params.yaml uses to freeze parts of a pretrained backbone, and
what the diagnosis uses to report per-layer gradients.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from trainlab.config.schema import ModelConfig


class Classifier(nn.Module):
    """backbone (named blocks) -> dropout -> linear head."""

    def __init__(self, backbone: nn.Sequential, feature_dim: int, num_classes: int, dropout: float):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.head = nn.Sequential(OrderedDict(dropout=nn.Dropout(dropout),
                                              linear=nn.Linear(feature_dim, num_classes)))
        self.frozen_blocks: set[str] = set()   # see set_frozen
        self.config: ModelConfig | None = None  # set by build_model

    def train(self, mode: bool = True) -> "Classifier":
        # Frozen blocks stay in eval mode so their batch-norm running statistics do not move.
        super().train(mode)
        for name in self.frozen_blocks:
            self.backbone.get_submodule(name).eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    @property
    def block_names(self) -> list[str]:
        """Backbone blocks that hold parameters, input side first."""
        return [name for name, block in self.backbone.named_children()
                if any(True for _ in block.parameters())]

    def layer_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """(depth-ordered name, parameters) per block and the head, for per-layer gradient norms."""
        groups = [(name, list(self.backbone.get_submodule(name).parameters())) for name in self.block_names]
        groups.append(("head", list(self.head.parameters())))
        return [(f"{i:02d}_{name}", params) for i, (name, params) in enumerate(groups)]


class AddChannel(nn.Module):
    """Give single-channel inputs their channel axis: (N, L) -> (N, 1, L)."""

    def __init__(self, active: bool):
        super().__init__()
        self.active = active

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1) if self.active else x
