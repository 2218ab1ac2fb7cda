"""DGL auxiliary head, in the variant of the MAN++ reference code."""
from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from ..bank import FeatureBank
from ..errors import ConfigError
from ..nets.pool import spatial_mean
from .base import HEADS, AuxHead, HeadContext


@HEADS.register("dgl")
class DGLHead(AuxHead):
    """Pool to <= 8x8, ``conv_layers`` x (1x1 conv, BN, ReLU), global pool,
    ``mlp_layers`` x (Linear, BN1d, ReLU), Linear to classes; cross-entropy.

    ``pool_exact``: pool to exactly 8x8, also up from smaller maps (e.g. 7x7 on 28x28
    inputs), as the reference's ``adaptive_avg_pool2d(x, (8, 8))`` does."""

    tasks = ("classification",)

    def __init__(self, ctx: HeadContext, conv_width: int = 128, mlp_width: int = 512,
                 conv_layers: int = 3, mlp_layers: int = 3, pool_exact: bool = False) -> None:
        super().__init__()
        if min(conv_width, mlp_width) < 1 or min(conv_layers, mlp_layers) < 0:
            raise ConfigError(f"dgl head: widths must be >= 1 and layer counts >= 0, got "
                              f"conv_width={conv_width}, mlp_width={mlp_width}, "
                              f"conv_layers={conv_layers}, mlp_layers={mlp_layers}")
        h, w = ctx.feature_size
        # Adaptive pooling never upsamples: small maps keep their size.
        self.pool = nn.AdaptiveAvgPool2d((8, 8) if pool_exact else (min(8, h), min(8, w)))
        convs: List[nn.Module] = []
        cin = ctx.info.channels
        for _ in range(conv_layers):
            convs += [nn.Conv2d(cin, conv_width, 1, bias=False),
                      nn.BatchNorm2d(conv_width), nn.ReLU(inplace=True)]
            cin = conv_width
        self.convs = nn.Sequential(*convs)
        mlp: List[nn.Module] = []
        for _ in range(mlp_layers):
            mlp += [nn.Linear(cin, mlp_width), nn.BatchNorm1d(mlp_width), nn.ReLU(inplace=True)]
            cin = mlp_width
        mlp.append(nn.Linear(cin, ctx.num_classes))
        self.mlp = nn.Sequential(*mlp)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        x = self.convs(self.pool(features))
        return self.mlp(spatial_mean(x))

    def forward(self, features: torch.Tensor, target: torch.Tensor,
                bank: FeatureBank) -> torch.Tensor:
        return F.cross_entropy(self.logits(features), target)
