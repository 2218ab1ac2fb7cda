"""A backbone as an ordered list of units with timm-style metadata."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

if TYPE_CHECKING:  # the bank imports nothing from nets; only the type is needed here
    from ..bank import FeatureBank


@dataclass(frozen=True)
class UnitInfo:
    """What a unit outputs: ``channels`` feature maps at ``reduction`` x downsampling.

    ``kind`` is ``"body"`` for units that may start or end a block and ``"head"`` for
    the task classifier, which always joins the last block. ``layout`` is ``"maps"``
    for [B, C, H, W] outputs and ``"tokens"`` for [B, N, C] (transformers).

    The feature bank: a unit with ``writes="low"`` stores its output under that name; a
    unit with ``reads=("low",)`` is called ``unit(h, bank["low"])`` (names in order;
    ``"image"`` is the network input, always there). A read across a block boundary is
    detached (``FeatureBank.seal``), inside one block it keeps its graph.
    """

    name: str
    channels: int
    reduction: int
    kind: str = "body"
    layout: str = "maps"
    reads: Tuple[str, ...] = ()
    writes: Optional[str] = None


def run_unit(unit: nn.Module, info: UnitInfo, h: torch.Tensor,
             bank: Optional["FeatureBank"]) -> torch.Tensor:
    """``unit(h)``, given the bank features it reads, storing its output if it writes one."""
    if info.reads:
        if bank is None:
            raise ValueError(f"unit {info.name!r} reads {list(info.reads)} from the feature "
                             "bank but none was given")
        h = unit(h, *(bank.read(name) for name in info.reads))
    else:
        h = unit(h)
    if info.writes is not None and bank is not None:
        bank.write(info.writes, h)
    return h


class UnitNet(nn.Module):
    """Runs ``units`` one after another. Subclasses only build the list.

    Attributes:
        units: the ordered units; the last one is the task head.
        unit_info: one ``UnitInfo`` per unit.
        in_chans, num_classes: the input and output sizes the net was built for.
    """

    # The per-model recipe (timm's default_cfgs idea), declared where the model is
    # registered and printed by ``locallearn list``: with it a spec such as
    # ``infopro+manpp`` means one documented objective per model.
    #: head family used when a method names only a bridge (e.g. ``manpp``)
    default_head: str = "greedy"
    #: per head family, this model's options for it (over the family's own defaults)
    head_recipes: Dict[str, Dict[str, object]] = {}
    #: units the learnable copy of a MAN/MAN++ bridge spans (ViT reference: 2)
    lb_depth: int = 1
    #: the task the last unit's output serves (a name in ``locallearn.tasks.TASKS``)
    task: str = "classification"
    #: the input (C, H, W) the model is meant for (None: any size its strides allow)
    input_size: Optional[Tuple[int, int, int]] = None

    def __init__(self, units: Sequence[nn.Module], unit_info: Sequence[UnitInfo],
                 in_chans: int, num_classes: int, source: Optional[nn.Module] = None,
                 default_head: Optional[str] = None,
                 default_head_opts: Optional[Dict[str, object]] = None,
                 task: Optional[str] = None,
                 head_recipes: Optional[Dict[str, Dict[str, object]]] = None,
                 input_size: Optional[Tuple[int, int, int]] = None) -> None:
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
        recipes = {k: dict(v) for k, v in type(self).head_recipes.items()}
        recipes.update({k: dict(v) for k, v in (head_recipes or {}).items()})
        if default_head_opts is not None:
            recipes[self.default_head] = dict(default_head_opts)
        self.head_recipes = recipes
        if task is not None:
            self.task = task
        if input_size is not None:
            self.input_size = tuple(input_size)  # type: ignore[assignment]
        known = {"image"}
        for info in self.unit_info:  # a read must name a feature written before it
            missing = [n for n in info.reads if n not in known]
            if missing:
                raise ValueError(f"unit {info.name!r} reads {missing} from the feature bank "
                                 f"but no earlier unit writes it (written: {sorted(known)})")
            if info.writes is not None:
                known.add(info.writes)
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

    def family_opts(self, family: str) -> Dict[str, object]:
        """This model's options for head family ``family`` (its recipe; {} if none)."""
        return dict(self.head_recipes.get(family, {}))

    @property
    def default_head_opts(self) -> Dict[str, object]:
        """The recipe's options of the default head family."""
        return self.family_opts(self.default_head)

    def recipe(self) -> Dict[str, object]:
        """The model's recipe as plain data (``locallearn list``, docs)."""
        return {"task": self.task, "default_head": self.default_head,
                "head_recipes": {k: dict(v) for k, v in self.head_recipes.items()},
                "lb_depth": self.lb_depth,
                "input_size": None if self.input_size is None else list(self.input_size)}

    @property
    def uses_bank(self) -> bool:
        """Whether any unit reads a bank feature (else no bank is made at inference)."""
        return any(info.reads for info in self.unit_info)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ..bank import FeatureBank

        bank = FeatureBank(x) if self.uses_bank else None
        for unit, info in zip(self.units, self.unit_info):
            x = run_unit(unit, info, x, bank)
        return x
