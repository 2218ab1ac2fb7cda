"""LocalNet: a backbone cut into K gradient-isolated blocks, with heads and bridges."""
from __future__ import annotations

from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .bank import FeatureBank
from .errors import ConfigError, choice_error
from .heads import HeadContext, build_head
from .methods import MethodSpec, parse_method
from .momentum import MomentumBridge, ema_update
from .nets.units import UnitNet
from .measure.memory import unit_activation_costs
from .split import balanced_split, split

SPLITS = ("equal", "memory")


class LocalNet(nn.Module):
    """Blocks + bridges + heads around an unchanged backbone.

    ``forward`` is plain inference through the backbone (heads and bridges unused);
    ``train_step`` runs the local-learning loop: each block's loss is backpropagated
    (freeing that block's graph) before the next block runs on a detached input.
    ``self.model`` keeps the original parameters, so its ``state_dict`` is the
    exportable backbone.
    """

    def __init__(self, model: UnitNet, blocks: int = 1,
                 method: Union[str, MethodSpec] = "e2e", *,
                 image_size: Tuple[int, int] = (32, 32),
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 boundaries: Optional[Sequence[int]] = None,
                 head_opts: Optional[Dict[str, object]] = None,
                 lb: str = "unit", ema_momentum: float = 0.995,
                 recompute: bool = False, split_by: str = "equal",
                 bridge_init: str = "copy") -> None:
        super().__init__()
        spec = parse_method(method) if isinstance(method, str) else method
        if not 0.0 <= ema_momentum < 1.0:
            raise ConfigError(f"ema momentum must be in [0, 1), got {ema_momentum}")
        self.spec = spec
        self.model = model
        head_family = model.default_head if spec.head == "auto" else spec.head
        if head_family == model.default_head:  # the family's recipe, overridable per option
            head_opts = {**model.default_head_opts, **(head_opts or {})}
        self.ema_momentum = float(ema_momentum)
        self.mean = tuple(mean) if mean is not None else None
        self.std = tuple(std) if std is not None else None
        k = 1 if spec.is_e2e else blocks
        if split_by not in SPLITS:
            raise choice_error("split", split_by, SPLITS)
        if split_by == "memory" and boundaries is None and k > 1:
            # cut where the saved activations balance, measured by a dry run of the units
            param = next(model.parameters())
            x = torch.zeros(2, model.in_chans, *image_size, device=param.device, dtype=param.dtype)
            costs = unit_activation_costs(list(model.units)[:-1], x)
            self.ranges: List[Tuple[int, int]] = balanced_split(costs, k)
        else:
            self.ranges = split(model.num_body_units, k, boundaries)
        info = model.unit_info
        reductions = sorted({u.reduction for u in info[:-1]})
        heads: List[nn.Module] = []
        self.head_contexts: List[HeadContext] = []
        bridges: List[MomentumBridge] = []
        for j in range(k - 1):
            nxt = self.ranges[j + 1][0]
            if spec.bridge is not None:
                lb_units = model.units[nxt:min(nxt + model.lb_depth, model.num_body_units)]
                bridges.append(MomentumBridge(model.units[nxt], info[nxt].channels,
                                              spec.bridge, lb, recompute, info[nxt].layout,
                                              lb_units=list(lb_units) if model.lb_depth > 1 else (),
                                              init=bridge_init))
                seen = info[nxt]
            else:
                seen = info[self.ranges[j][1] - 1]
            ctx = HeadContext(info=seen, index=j, num_heads=k - 1,
                              num_classes=model.num_classes, image_size=tuple(image_size),
                              image_channels=model.in_chans,
                              stage=reductions.index(seen.reduction) + 1,
                              num_stages=len(reductions))
            self.head_contexts.append(ctx)
            heads.append(build_head(str(head_family), ctx, **(head_opts or {})))
        self.heads = nn.ModuleList(heads)
        self.bridges = nn.ModuleList(bridges)

    @property
    def k(self) -> int:
        """Number of gradient-isolated blocks."""
        return len(self.ranges)

    def block_units(self, j: int) -> List[nn.Module]:
        """The units of block j (the last block also runs the task-head unit)."""
        start, end = self.ranges[j]
        if j == self.k - 1:
            end = len(self.model.units)
        return list(self.model.units[start:end])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def block_losses(self, x: torch.Tensor, y: torch.Tensor,
                     bank: Optional[FeatureBank] = None) -> Iterator[Tuple[int, torch.Tensor]]:
        """Yield ``(j, loss_j)`` block by block; the caller backpropagates each.

        Block j+1 starts from ``h.detach()`` — the only gradient cut — taken after
        the caller resumed the generator, i.e. after ``loss_j.backward()``.
        """
        bank = bank if bank is not None else FeatureBank(x, self.mean, self.std)
        for j, h in self._walk(x, cut=True):
            if j == self.k - 1:
                yield j, F.cross_entropy(h, y)
            else:
                yield j, self.heads[j](self._head_input(j, h), y, bank)

    def _walk(self, x: torch.Tensor, cut: bool) -> Iterator[Tuple[int, torch.Tensor]]:
        """Yield ``(j, output of block j)``; with ``cut`` the next block starts from it
        detached, taken when the caller resumes the generator (after its backward)."""
        h = x
        for j in range(self.k):
            for unit in self.block_units(j):
                h = unit(h)
            yield j, h
            if cut:
                h = h.detach()

    def _head_input(self, j: int, h: torch.Tensor) -> torch.Tensor:
        """What head j reads: block j's output, through bridge j under MAN/MAN++."""
        return self.bridges[j](h) if len(self.bridges) else h

    @torch.no_grad()
    def head_logits(self, x: torch.Tensor) -> List[Optional[torch.Tensor]]:
        """What each block's classifier says about ``x``: head j's class scores for
        j < K-1 (None where the head has none), the network's output for the last.

        Layer-wise accuracy of these is the papers' diagnostic of how much each
        local objective has learned (and of what MAN++'s bridge adds to it).
        """
        return [h if j == self.k - 1 else self.heads[j].logits(self._head_input(j, h))
                for j, h in self._walk(x, cut=False)]

    def bridge_scales(self) -> List[Optional[float]]:
        """MAN++'s learned scale s_j per boundary (None for bridges without one)."""
        return [None if b.scale is None else float(b.scale.detach()) for b in self.bridges]

    @torch.no_grad()
    def ema_lags(self) -> List[float]:
        """Per bridge, how far its EMA copy trails the unit it tracks:
        ``||theta_ema - theta_unit|| / ||theta_unit||`` over the parameters."""
        lags = []
        for bridge, src in zip(self.bridges, self.ema_sources()):
            ema = torch.cat([p.detach().flatten().float() for p in bridge.ema.parameters()])
            live = torch.cat([p.detach().flatten().float() for p in src.parameters()])
            lags.append(float((ema - live).norm() / live.norm().clamp_min(1e-12)))
        return lags

    def block_parameters(self, j: int) -> List[nn.Parameter]:
        """Trainable parameters updated by block j's loss: its units, head j, bridge j."""
        mods: List[nn.Module] = self.block_units(j)
        if j < self.k - 1:
            mods.append(self.heads[j])
            if len(self.bridges):
                mods.append(self.bridges[j])
        return [p for m in mods for p in m.parameters() if p.requires_grad]

    def train_step(self, x: torch.Tensor, y: torch.Tensor,
                   backward: Optional[Callable[[torch.Tensor], None]] = None,
                   after_block: Optional[Callable[[int], None]] = None) -> torch.Tensor:
        """Forward and backward every block; returns the K losses, detached (no sync).

        ``backward`` replaces ``loss.backward()`` (e.g. a GradScaler's scaled backward).
        ``after_block(j)`` runs right after block j's backward — the place to step
        block j's optimizer and drop its gradients, so that gradient memory is one
        block's. That is exact: no later loss reaches block j's parameters. The
        EMA update (``ema_update``) is the caller's, after all blocks.
        """
        losses: List[torch.Tensor] = []
        for j, loss in self.block_losses(x, y):
            if backward is None:
                loss.backward()
            else:
                backward(loss)
            losses.append(loss.detach())
            if after_block is not None:
                after_block(j)
        return torch.stack(losses)

    def ema_sources(self) -> List[nn.Module]:
        """The live unit each bridge's EMA copy tracks (first unit of block j+1)."""
        return [self.model.units[self.ranges[j + 1][0]] for j in range(len(self.bridges))]

    def ema_update(self) -> None:
        """One fused EMA step of every bridge towards the unit it tracks."""
        if len(self.bridges):
            ema_update(list(self.bridges), self.ema_sources(), self.ema_momentum)
