"""Greedy supervised learning head: global average pool + one linear classifier."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..bank import FeatureBank
from ..nets.pool import spatial_mean
from .base import HEADS, AuxHead, HeadContext


@HEADS.register("greedy")
class GreedyHead(AuxHead):
    """``Linear(C, num_classes)`` on globally pooled features, cross-entropy."""

    def __init__(self, ctx: HeadContext) -> None:
        super().__init__()
        self.fc = nn.Linear(ctx.info.channels, ctx.num_classes)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(spatial_mean(features))

    def forward(self, features: torch.Tensor, target: torch.Tensor,
                bank: FeatureBank) -> torch.Tensor:
        return F.cross_entropy(self.logits(features), target)
