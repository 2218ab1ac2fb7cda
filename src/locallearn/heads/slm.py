"""SLM auxiliary network (feature-bank paper): a reduced copy of the rest of the backbone.

The aux net of block j keeps one unit per remaining stage (a stage = consecutive units
with the same resolution and width; its first unit, which changes them, is kept) and the
network's own task unit, all with fresh weights, and is trained by the network's own
loss. It reads what it needs from the feature bank: a kept unit takes over the bank
writes of the stage it stands for, so a copied decoder reading a skip finds it (written
by the copy, or by the backbone when block j or an earlier one wrote it: the bank is
sealed at block boundaries, so only block j's own features carry a gradient).
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..bank import FeatureBank
from ..errors import ConfigError
from ..nets.units import UnitInfo, run_unit
from .base import HEADS, AuxHead, HeadContext


class _HeadBank:
    """Reads the aux net's own writes first, then the real bank; writes stay local."""

    def __init__(self, bank: Optional[FeatureBank]) -> None:
        self.bank = bank
        self.local: Dict[str, torch.Tensor] = {}

    def read(self, name: str) -> torch.Tensor:
        if name in self.local:
            return self.local[name]
        if self.bank is None:
            raise ConfigError(f"this slm head reads {name!r} from the feature bank; pass the bank")
        return self.bank.read(name)

    def write(self, name: str, value: torch.Tensor) -> None:
        self.local[name] = value


def reduce_rest(rest: Tuple[Tuple[nn.Module, UnitInfo], ...],
                per_stage: int = 1) -> List[Tuple[nn.Module, UnitInfo]]:
    """The units an slm head copies: the first ``per_stage`` units of each stage of the
    remaining body, then the task unit; a kept unit writes what its stage wrote last."""
    body, task_unit = list(rest[:-1]), rest[-1]
    stages: List[List[Tuple[nn.Module, UnitInfo]]] = []
    for unit, info in body:
        if not stages or (info.reduction, info.channels) != (stages[-1][0][1].reduction,
                                                             stages[-1][0][1].channels):
            stages.append([])
        stages[-1].append((unit, info))
    kept: List[Tuple[nn.Module, UnitInfo]] = []
    for stage in stages:
        keep = stage[:per_stage]
        writes = [info.writes for _, info in stage if info.writes is not None]
        unit, info = keep[-1]
        if writes:  # the stage's output goes to the bank under the name the stage used
            keep[-1] = (unit, UnitInfo(info.name, info.channels, info.reduction, info.kind,
                                       info.layout, info.reads, writes[-1]))
        kept.extend(keep)
    return [*kept, task_unit]


def _fresh(unit: nn.Module) -> nn.Module:
    """A copy of ``unit`` with its own, newly initialised parameters."""
    new = copy.deepcopy(unit)
    # a unit with its own reset (e.g. a detector's FPN + head, whose class prior a plain
    # conv reset would lose) resets all of itself
    own = getattr(new, "reset_parameters", None)
    for m in [new] if callable(own) else new.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):  # convs, linears, norms (BatchNorm: its running stats too)
            reset()
    for p in new.parameters():
        p.requires_grad_(True)
    return new


@HEADS.register("slm")
class SLMHead(AuxHead):
    """Fresh copies of one unit per remaining stage + the task unit; the task's loss."""

    layouts = ("maps", "tokens")
    needs_bank = True

    def __init__(self, ctx: HeadContext, per_stage: int = 1) -> None:
        super().__init__()
        if per_stage < 1:
            raise ConfigError(f"slm option per_stage must be >= 1, got {per_stage}")
        if not ctx.rest:
            raise ConfigError("an slm head needs the rest of the backbone; build it through "
                              "LocalNet, which passes it in the head's context")
        self.task = ctx.task
        kept = reduce_rest(ctx.rest, per_stage)
        self.units = nn.ModuleList(_fresh(u) for u, _ in kept)
        self.unit_info = [info for _, info in kept]
        # the unit whose output the head reads may write a bank feature: under a bridge
        # that unit is the bridge's copy, whose output the backbone never wrote
        self.input_writes = ctx.info.writes

    def logits(self, features: torch.Tensor,
               bank: Optional[FeatureBank] = None) -> torch.Tensor:
        """The aux net's output (the network's output format: class scores, pixel logits)."""
        local = _HeadBank(bank)
        if self.input_writes is not None:
            local.write(self.input_writes, features)
        h = features
        for unit, info in zip(self.units, self.unit_info):
            h = run_unit(unit, info, h, local)  # type: ignore[arg-type]
        return h

    def forward(self, features: torch.Tensor, target: torch.Tensor,
                bank: FeatureBank) -> torch.Tensor:
        return self.task.loss(self.logits(features, bank), target)
