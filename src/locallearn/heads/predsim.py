"""PredSim head (Nøkland & Eidnes 2019): prediction loss + similarity-matching loss."""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..bank import FeatureBank
from ..errors import ConfigError
from .base import HEADS, AuxHead, HeadContext
from .losses import label_similarity, similarity_matrix


def pool_side(channels: int, size: Tuple[int, int], max_features: int) -> Tuple[int, int]:
    """Pooled (h, w) for the pred branch: largest s with channels*s*s <= max_features,
    at least 1, and never larger than the feature map."""
    s = max(1, math.isqrt(max_features // channels))
    return min(s, size[0]), min(s, size[1])


@HEADS.register("predsim")
class PredSimHead(AuxHead):
    """``(1-beta) * CE(pred) + beta * MSE(S(conv(features)), S(one-hot labels))``."""

    tasks = ("classification",)

    def __init__(self, ctx: HeadContext, beta: float = 0.99, max_features: int = 2048) -> None:
        super().__init__()
        if not 0.0 <= beta <= 1.0 or max_features < 1:
            raise ConfigError(f"predsim: beta must be in [0, 1] and max_features >= 1, "
                              f"got beta={beta}, max_features={max_features}")
        c = ctx.info.channels
        self.beta = float(beta)
        self.num_classes = ctx.num_classes
        self.sim_conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        h, w = pool_side(c, ctx.feature_size, max_features)
        self.pool = nn.AdaptiveAvgPool2d((h, w))
        self.fc = nn.Linear(c * h * w, ctx.num_classes)
        # Zero init as in the reference: the pred branch starts at uniform output.
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(features).flatten(1))

    def sim_loss(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        s = similarity_matrix(self.sim_conv(features))
        return F.mse_loss(s, label_similarity(target, self.num_classes))

    def forward(self, features: torch.Tensor, target: torch.Tensor,
                bank: FeatureBank) -> torch.Tensor:
        pred = F.cross_entropy(self.logits(features), target)
        return (1.0 - self.beta) * pred + self.beta * self.sim_loss(features, target)
