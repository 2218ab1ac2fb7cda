"""Greedy supervised learning head: the task's predictor alone on the block's features."""
from __future__ import annotations

import torch

from ..bank import FeatureBank
from .base import HEADS, AuxHead, HeadContext


@HEADS.register("greedy")
class GreedyHead(AuxHead):
    """The task predictor and the task's loss: for classification a linear classifier on
    globally pooled features and cross-entropy; for segmentation a conv predictor of
    per-pixel scores and pixel-wise cross-entropy; for detection a small RetinaNet head
    on local pyramid levels. ``width``: the dense predictors' hidden channels (0: the
    task's default; a detector's recipe sets its FPN width)."""

    def __init__(self, ctx: HeadContext, width: int = 0) -> None:
        super().__init__()
        self.task = ctx.task
        # "fc": the checkpoint keys of every task's predictor
        self.fc = ctx.task.predictor(ctx.info.channels, ctx.num_classes, ctx.info.reduction,
                                     width=width)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def forward(self, features: torch.Tensor, target: torch.Tensor,
                bank: FeatureBank) -> torch.Tensor:
        return self.task.loss(self.logits(features), target)
