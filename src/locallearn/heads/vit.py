"""Transformer head: LayerNorm + linear classifier on the class token (MAN++ ViT reference)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..bank import FeatureBank
from .base import HEADS, AuxHead, HeadContext


@HEADS.register("vit")
class VitHead(AuxHead):
    """``CE(Linear(LayerNorm(tokens[:, 0])), y)`` for [B, N, D] token features."""

    tasks = ("classification",)

    layouts = ("tokens",)

    def __init__(self, ctx: HeadContext) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(ctx.info.channels)
        self.fc = nn.Linear(ctx.info.channels, ctx.num_classes)

    def forward(self, features: torch.Tensor, target: torch.Tensor,
                bank: FeatureBank) -> torch.Tensor:
        return F.cross_entropy(self.logits(features), target)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(features[:, 0]))
