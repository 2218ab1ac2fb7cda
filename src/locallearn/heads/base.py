"""What every auxiliary head gets to know, and the head registry."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple

import torch
from torch import nn

from ..bank import FeatureBank
from ..nets.units import UnitInfo
from ..registry import Registry
from ..tasks import Task, get_task


@dataclass(frozen=True)
class HeadContext:
    """Sizes a head is built from (never hard-coded channel lists).

    Attributes:
        info: metadata of the unit whose output the head reads.
        index: which local head this is, 0 .. num_heads-1 (head j follows block j).
        num_heads: K-1, the number of local heads in the network.
        num_classes: classes of the task.
        image_size: (H, W) of the network input.
        image_channels: channels of the network input.
        stage: 1-based index of the resolution stage of ``info`` (for stage-wise schedules).
        num_stages: number of distinct resolutions in the backbone.
        task: the network's task: its ``predictor`` ends every head, its ``loss`` trains it.
        rest: ``(unit, info)`` of every unit after the one the head reads, up to and with
            the task unit (what an ``slm`` head makes its reduced copy of).
    """

    info: UnitInfo
    index: int
    num_heads: int
    num_classes: int
    image_size: Tuple[int, int]
    image_channels: int
    stage: int = 1
    num_stages: int = 1
    task: Task = field(default_factory=lambda: get_task("classification"))
    rest: Tuple[Tuple[nn.Module, UnitInfo], ...] = ()

    @property
    def feature_size(self) -> Tuple[int, int]:
        """(H, W) of the features this head reads."""
        r = self.info.reduction
        return (math.ceil(self.image_size[0] / r), math.ceil(self.image_size[1] / r))


class AuxHead(nn.Module):
    """Base class: ``head(features, target, bank) -> scalar loss``."""

    #: feature layouts (UnitInfo.layout) the family can read
    layouts: Tuple[str, ...] = ("maps",)
    #: tasks the family can serve (None: every task, through the task's predictor)
    tasks: Optional[Tuple[str, ...]] = None

    def forward(self, features: torch.Tensor, target: torch.Tensor,
                bank: FeatureBank) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def logits(self, features: torch.Tensor) -> Optional[torch.Tensor]:
        """Class scores of this head, or None where it has none (e.g. a contrastive head)."""
        return None


HeadBuilder = Callable[..., AuxHead]
HEADS: Registry[HeadBuilder] = Registry("head")


def interpolate(start: float, end: float, ctx: HeadContext, by: str = "block",
                over: int = 0) -> float:
    """Linear schedule of a loss weight over the local heads.

    ``by="block"``: from ``start`` at head 0 to ``end`` at head K-2 (InfoPro's rule).
    ``by="stage"``: the MAN/MAN++ CIFAR code's rule, which interpolates by the
    1-based stage number over K-2 (kept for reproducing that code exactly).
    ``over``: the denominator (0: the number of heads - 1, i.e. K-2). The reference
    code divides by its own K - 2, which is not this network's where its tables give
    another number of blocks (e.g. its K=8 is 9 blocks).
    """
    if by not in ("block", "stage"):
        raise ValueError(f"unknown interpolation {by!r} (choose from: block, stage)")
    denom = over if over > 0 else ctx.num_heads - 1
    if denom <= 0:
        return float(start)
    t = (ctx.index if by == "block" else ctx.stage) / denom
    return float(start * (1.0 - t) + end * t)
