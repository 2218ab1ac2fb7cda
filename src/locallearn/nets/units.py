"""A backbone as an ordered list of units with timm-style metadata."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class UnitInfo:
    """What a unit outputs: ``channels`` feature maps at ``reduction`` x downsampling.

    ``kind`` is ``"body"`` for units that may start or end a block and ``"head"`` for
    the task classifier, which always joins the last block. ``layout`` is ``"maps"``
    for [B, C, H, W] outputs and ``"tokens"`` for [B, N, C] (transformers).
    """

    name: str
    channels: int
    reduction: int
    kind: str = "body"
    layout: str = "maps"


class UnitNet(nn.Module):
    """Runs ``units`` one after another. Subclasses only build the list.

    Attributes:
        units: the ordered units; the last one is the task head.
        unit_info: one ``UnitInfo`` per unit.
        in_chans, num_classes: the input and output sizes the net was built for.
    """

    #: head family used when a method names only a bridge (e.g. ``manpp``)
    default_head: str = "greedy"
    #: options for heads of the default family (the family's reference recipe)
    default_head_opts: Dict[str, object] = {}
    #: units the learnable copy of a MAN/MAN++ bridge spans (ViT reference: 2)
    lb_depth: int = 1

    def __init__(self, units: Sequence[nn.Module], unit_info: Sequence[UnitInfo],
                 in_chans: int, num_classes: int, source: Optional[nn.Module] = None,
                 default_head: Optional[str] = None,
                 default_head_opts: Optional[Dict[str, object]] = None) -> None:
        super().__init__()
        if len(units) != len(unit_info):
            raise ValueError("units and unit_info differ in length")
        if unit_info[-1].kind != "head" or any(u.kind != "body" for u in unit_info[:-1]):
            raise ValueError("a UnitNet needs body units followed by exactly one head unit")
        self.units = nn.ModuleList(units)
        self.unit_info: List[UnitInfo] = list(unit_info)
        self.in_chans = in_chans
        self.num_classes = num_classes
        if default_head is not None:
            self.default_head = default_head
        if default_head_opts is not None:
            self.default_head_opts = dict(default_head_opts)
        # The user's original module, whose parameters the units share. Kept outside the
        # module tree (no duplicate state_dict keys); its state_dict is the export format.
        object.__setattr__(self, "source", source)

    def export_state_dict(self) -> Dict[str, torch.Tensor]:
        """Weights in the original model's own layout (loads with ``strict=True``)."""
        return (self.source if self.source is not None else self).state_dict()

    @property
    def num_body_units(self) -> int:
        """Units that blocks are cut from (all but the task head)."""
        return len(self.units) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            x = unit(x)
        return x
