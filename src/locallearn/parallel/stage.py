"""A pipeline stage: the blocks one rank owns, their heads, bridges and optimizer state,
and a mirror of the unit its last bridge tracks on the next rank.

Every rank builds the whole LocalNet from the same seed (so the weights equal a single
process's), then moves what it does not own to the ``meta`` device: its memory is its
blocks' only.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from ..local_net import LocalNet
from ..momentum import ema_update
from ..split import balanced_split


def assign_blocks(k: int, world: int, costs: Optional[Sequence[float]] = None
                  ) -> List[Tuple[int, int]]:
    """Contiguous block ranges ``[first, last)`` for each of ``world`` ranks: balanced by
    ``costs`` (e.g. each block's measured step time), else by count (earlier ranks take
    the extra block)."""
    if not 1 <= world <= k:
        raise ConfigError(f"a pipeline of {world} ranks needs at least {world} blocks, got "
                          f"K={k}: use --blocks >= {world} or fewer processes (--nproc-per-node)")
    if costs is not None:
        return balanced_split(list(costs), world)
    base, extra = divmod(k, world)
    out, first = [], 0
    for r in range(world):
        last = first + base + (r < extra)
        out.append((first, last))
        first = last
    return out


class Stage:
    """Rank ``rank``'s share of ``net``: blocks ``first .. last-1``."""

    def __init__(self, net: LocalNet, first: int, last: int, device: torch.device) -> None:
        self.net, self.first, self.last = net, first, last
        self.is_first, self.is_last = first == 0, last == net.k
        # the bridge after our last block tracks the next rank's first unit: a local copy
        # of it (refreshed from that rank every --ema-sync-every steps) stands in for it
        self.remote_bridge = not self.is_last and len(net.bridges) > 0
        self.mirror: Optional[nn.Module] = None
        if self.remote_bridge:
            self.mirror = copy.deepcopy(net.ema_sources()[last - 1]).requires_grad_(False)
        owned = self.owned_modules()
        keep = {id(p) for m in owned for p in [*m.parameters(), *m.buffers()]}
        for m in net.modules():  # the rest takes no memory
            for name, p in list(m.named_parameters(recurse=False)):
                if id(p) not in keep:
                    setattr(m, name, nn.Parameter(p.detach().to("meta"), p.requires_grad))
            for name, b in list(m.named_buffers(recurse=False)):
                if b is not None and id(b) not in keep:
                    m._buffers[name] = b.to("meta")
        for m in owned:  # (meta tensors cannot move)
            m.to(device)
        if self.mirror is not None:
            self.mirror.to(device)
        # what each bridge's EMA copy tracks, indexed like net.bridges (None: not ours); the
        # modules never change, only their weights
        live = net.ema_sources()
        self.sources: List[Optional[nn.Module]] = [None] * len(net.bridges)
        for j in self.bridge_range:
            self.sources[j] = self.mirror if j == last - 1 else live[j]

    def owned_modules(self) -> List[nn.Module]:
        mods: List[nn.Module] = []
        for j in range(self.first, self.last):
            mods += self.net.block_units(j)
            if j < self.net.k - 1:
                mods.append(self.net.heads[j])
                if len(self.net.bridges):
                    mods.append(self.net.bridges[j])
        return mods

    @property
    def bridge_range(self) -> range:
        """Indices of the bridges this rank trains (one after each of its blocks but the
        network's last)."""
        return range(self.first, min(self.last, self.net.k - 1)) if len(self.net.bridges) \
            else range(0)

    def ema_update(self) -> None:
        """After-step EMA of this rank's bridges (the last one towards the mirror)."""
        mine = list(self.bridge_range)
        if self.net.ema_timing != "after-step" or not mine:
            return
        ema_update([self.net.bridges[j] for j in mine], [self.sources[j] for j in mine],
                   self.net.ema_momentum)

    def first_unit_weights(self) -> List[torch.Tensor]:
        """The parameters of this rank's first unit: what the previous rank's bridge tracks."""
        unit = self.net.model.units[self.net.ranges[self.first][0]]
        return [p.detach() for p in unit.parameters()]

    @torch.no_grad()
    def set_mirror(self, weights: Sequence[torch.Tensor]) -> None:
        assert self.mirror is not None
        for p, w in zip(self.mirror.parameters(), weights):
            p.copy_(w)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The net's entries this rank owns (the rest is on ``meta``)."""
        return {k: v for k, v in self.net.state_dict().items() if v.device.type != "meta"}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        mine = self.state_dict()
        if set(mine) != set(state):
            missing = sorted(set(mine) - set(state))[:3]
            extra = sorted(set(state) - set(mine))[:3]
            raise ConfigError(f"this rank's checkpoint holds other blocks than blocks "
                              f"{self.first}..{self.last - 1} (missing {missing}, extra {extra})")
        self.net.load_state_dict(state, strict=False)
