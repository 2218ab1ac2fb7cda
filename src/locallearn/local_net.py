"""LocalNet: a backbone cut into K gradient-isolated blocks, with heads and bridges."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .bank import FeatureBank
from .errors import ConfigError, ConfigTypeError, check_choice, choice_error
from .heads import HeadContext, build_head
from .local_net_args import as_method, check_normalisation, check_overrides
from .methods import MethodSpec
from .momentum import EMA_TIMINGS, INITS, LB_KINDS, MomentumBridge, ema_update
from .nets.checks import as_float, as_int, as_size
from .nets.units import UnitNet, run_unit
from .tasks import get_task
from .measure.memory import unit_activation_costs
from .reference import INIT_CHOICES, reference_init_
from .split import balanced_split, split, stage_split

SPLITS = ("equal", "memory", "time", "stages")


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
                 bridge_init: str = "copy", ema_timing: str = "after-step",
                 head_init: str = "default",
                 head_overrides: Optional[Mapping[int, Mapping[str, object]]] = None) -> None:
        super().__init__()
        spec = as_method(method)
        if not isinstance(model, UnitNet):
            hint = ("; wrap a torchvision / timm / nn.Sequential model with locallearn.wrap(model, "
                    "...) or build a registered one with create_model(name, ...)")
            raise ConfigTypeError(f"model must be a locallearn UnitNet, got "
                                  f"{'None' if model is None else type(model).__name__}{hint}")
        blocks = as_int("blocks", blocks)  # its range is checked by split(), knowing the units
        image_size = as_size("image_size", image_size)
        ema_momentum = as_float("ema_momentum", ema_momentum)
        if not 0.0 <= ema_momentum < 1.0:
            raise ConfigError(f"ema momentum must be in [0, 1), got {ema_momentum}")
        # checked even where a method has no bridge: a wrong value is never ignored silently
        check_choice("lb", lb, LB_KINDS)
        check_choice("bridge_init", bridge_init, INITS)
        check_choice("ema_timing", ema_timing, EMA_TIMINGS)
        check_choice("head_init", head_init, INIT_CHOICES)
        if head_opts is not None and not isinstance(head_opts, Mapping):
            raise ConfigTypeError(f"head_opts must be a dict of head options, got {head_opts!r}")
        if boundaries is not None:
            if isinstance(boundaries, (str, bytes)) or not hasattr(boundaries, "__iter__"):
                raise ConfigTypeError(f"boundaries must be a sequence of unit indices, "
                                      f"got {boundaries!r}")
            boundaries = [as_int("boundaries", b) for b in boundaries]
        mean, std = check_normalisation(mean, std, model.in_chans)
        self.spec = spec
        self.model = model
        self.task = get_task(model.task).for_model(model)
        head_family = model.default_head if spec.head == "auto" else spec.head
        if head_family is not None:  # the model's recipe for the family, overridable per option
            head_opts = {**model.family_opts(head_family), **(head_opts or {})}
        self.ema_momentum = float(ema_momentum)
        self.ema_timing = ema_timing
        self.mean, self.std = mean, std
        # a wrapped ViT's position embeddings fix its input size (unless built dynamic)
        info0 = model.unit_info[0]
        self._fixed_size = image_size if (info0.layout == "tokens" and model.source is not None
                                          and not getattr(model.source, "dynamic_img_size",
                                                          False)) else None
        if spec.is_e2e and (blocks != 1 or boundaries):
            # never ignored silently: e2e is one block, whatever K was asked for
            raise ConfigError(f"method 'e2e' is one block; got blocks={blocks}"
                              f"{f' and boundaries={list(boundaries)}' if boundaries else ''} "
                              "(use a local method such as 'dgl+manpp' for K > 1)")
        k = blocks
        if split_by not in SPLITS:  # before the memory split's dry run
            raise choice_error("split", split_by, SPLITS)
        if split_by == "memory" and boundaries is None and k > 1:
            # cut where the saved activations balance, measured by a dry run of the units
            param = next(model.parameters())
            x = torch.zeros(2, model.in_chans, *image_size, device=param.device, dtype=param.dtype)
            costs = unit_activation_costs(list(model.units)[:-1], x)
            self.ranges: List[Tuple[int, int]] = balanced_split(costs, k)
        elif split_by == "time" and boundaries is None and k > 1:
            # cut where the units' forward + backward times balance: a pipeline's stages
            # then take equally long (measured on the model's device, batch 8)
            from .measure.pipeline_cost import unit_seconds

            param = next(model.parameters())
            x = torch.zeros(8, model.in_chans, *image_size, device=param.device, dtype=param.dtype)
            self.ranges = balanced_split(unit_seconds(model, x), k)
        elif split_by == "stages" and boundaries is None:
            self.ranges = stage_split([u.reduction for u in model.unit_info[:-1]], k)
        else:
            self.ranges = split(model.num_body_units, k, boundaries)
        info = model.unit_info
        per_head = check_overrides(head_overrides, k - 1)
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
                first_rest = nxt + 1  # the bridge stands in for the next block's first unit
            else:
                first_rest = nxt
            seen = info[first_rest - 1]
            ctx = HeadContext(info=seen, index=j, num_heads=k - 1,
                              num_classes=model.num_classes, image_size=tuple(image_size),
                              image_channels=model.in_chans,
                              stage=reductions.index(seen.reduction) + 1,
                              num_stages=len(reductions), task=self.task,
                              rest=tuple(zip(model.units[first_rest:], info[first_rest:])))
            self.head_contexts.append(ctx)
            head = build_head(str(head_family), ctx, **{**(head_opts or {}), **per_head.get(j, {})})
            if head_init == "reference":
                reference_init_(head)
            heads.append(head)
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
        self._check_images(x)
        return self.model(x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The task's prediction for ``x`` (class indices, per-pixel class ids, ...)."""
        return self.task.predict(self(x), tuple(x.shape[-2:]))

    def block_losses(self, x: torch.Tensor, y: torch.Tensor,
                     bank: Optional[FeatureBank] = None) -> Iterator[Tuple[int, torch.Tensor]]:
        """Yield ``(j, loss_j)`` block by block; the caller backpropagates each.

        Block j+1 starts from ``h.detach()`` — the only gradient cut — taken after
        the caller resumed the generator, i.e. after ``loss_j.backward()``.
        Wrong inputs (see ``_check_batch``) raise before any block runs.
        """
        y = self._check_batch(x, y)
        bank = bank if bank is not None else FeatureBank(x, self.mean, self.std)
        yield from self.run_blocks(x, y, bank, 0, self.k)

    def run_blocks(self, h: torch.Tensor, y: Any, bank: FeatureBank, first: int,
                   last: int) -> Iterator[Tuple[int, torch.Tensor]]:
        """Yield ``(j, loss_j)`` for blocks ``first .. last-1`` from ``h``, the input of
        block ``first`` (the image for block 0, else the previous block's detached output;
        a pipeline stage runs its own range of blocks with this). ``self.last_output``
        holds block ``last-1``'s output, detached, once the generator is exhausted."""
        for j, out in self._walk(h, cut=True, bank=bank, first=first, last=last):
            if j == self.k - 1:
                yield j, self.task.loss(out, y)
            else:
                yield j, self.heads[j](self._head_input(j, out), y, bank)
            self.last_output = out.detach()

    def _check_batch(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Validate a training batch; return ``y`` as the task's criterion wants it.

        Raises ConfigTypeError / ConfigError naming ``x`` or ``y`` for what would otherwise
        fail deep inside (a uint8 or int image, wrong channels or dims, float labels,
        lengths that differ), give NaN losses (an empty batch) or, on CUDA, a device-side
        assert that kills the process (labels out of range). The target's checks are the
        task's (``Task.check_target``), which reads no device memory back: no host sync.
        """
        self._check_images(x)
        if x.shape[0] == 1 and self.training and any(
                isinstance(m, nn.BatchNorm1d) for m in self.modules()):
            raise ConfigError("x holds 1 sample, but training BatchNorm1d layers (e.g. the dgl "
                              "head's) needs at least 2 samples per batch")
        return self.task.check_target(y, x, self.model.num_classes)

    def _check_images(self, x: torch.Tensor) -> None:
        """``x`` must be a non-empty floating-point [B, C, H, W] batch on the model's device,
        with the model's channels (only metadata is read: free)."""
        if not isinstance(x, torch.Tensor):
            raise ConfigTypeError(f"x must be a torch.Tensor of images [B, C, H, W], got "
                                  f"{type(x).__name__}")
        if not x.dtype.is_floating_point:
            raise ConfigTypeError(f"x must be a floating-point image batch, got {x.dtype}; "
                                  "convert it first (e.g. x.float() / 255, then normalise)")
        chans = self.model.in_chans
        if x.dim() != 4 or x.shape[1] != chans:
            raise ConfigError(f"x must be an image batch [B, {chans}, H, W] (in_chans={chans}), "
                              f"got shape {tuple(x.shape)}")
        if self._fixed_size is not None and tuple(x.shape[2:]) != self._fixed_size:
            raise ConfigError(f"x holds {x.shape[2]}x{x.shape[3]} images but this ViT was built "
                              f"for image_size {self._fixed_size}")
        if x.numel() == 0:
            raise ConfigError(f"x is an empty batch (shape {tuple(x.shape)}): nothing to learn "
                              "from, the losses would be NaN")
        param = next(self.model.parameters(), None)
        if param is not None:
            if x.device != param.device:
                raise ConfigError(f"x is on {x.device} but the model on {param.device}; "
                                  f"use x.to({str(param.device)!r}) or net.to(...)")
            if x.dtype != param.dtype and not torch.is_autocast_enabled(x.device.type):
                raise ConfigTypeError(f"x is {x.dtype} but the model's parameters are "
                                      f"{param.dtype}; use x.to({param.dtype}) (or autocast)")

    def _walk(self, x: torch.Tensor, cut: bool, bank: Optional[FeatureBank] = None,
              first: int = 0, last: Optional[int] = None) -> Iterator[Tuple[int, torch.Tensor]]:
        """Yield ``(j, output of block j)`` for blocks ``first .. last-1`` (``x`` is block
        ``first``'s input); with ``cut`` the next block starts from it detached and the
        bank is sealed (its features detached too), both taken when the caller resumes
        the generator (after its backward)."""
        if bank is None and self.model.uses_bank:
            bank = FeatureBank(x, self.mean, self.std)
        info = self.model.unit_info
        h = x
        for j in range(first, self.k if last is None else last):
            start = self.ranges[j][0]
            for i, unit in enumerate(self.block_units(j), start=start):
                h = run_unit(unit, info[i], h, bank)
            yield j, h
            if cut:
                h = h.detach()
                if bank is not None:
                    bank.seal()

    def _head_input(self, j: int, h: torch.Tensor) -> torch.Tensor:
        """What head j reads: block j's output, through bridge j under MAN/MAN++."""
        return self.bridges[j](h) if len(self.bridges) else h

    @torch.no_grad()
    def head_logits(self, x: torch.Tensor) -> List[Optional[torch.Tensor]]:
        """What each block's predictor says about ``x``: head j's scores (class scores,
        pixel logits) for j < K-1 (None where the head has none), the network's output
        for the last.

        Layer-wise accuracy of these is the papers' diagnostic of how much each
        local objective has learned (and of what MAN++'s bridge adds to it).
        """
        self._check_images(x)
        bank = FeatureBank(x, self.mean, self.std)
        out: List[Optional[torch.Tensor]] = []
        for j, h in self._walk(x, cut=False, bank=bank):
            if j == self.k - 1:
                out.append(h)
                continue
            head, inp = self.heads[j], self._head_input(j, h)
            out.append(head.logits(inp, bank) if getattr(head, "needs_bank", False)
                       else head.logits(inp))
        return out

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
        EMA update (``ema_update``) is the caller's, after all blocks, unless
        ``ema_timing="before-step"``: then bridge j's EMA copy moves here, right after
        block j's backward and before ``after_block(j)``, towards its unit's weights
        before any of this step's updates (the reference code's order).
        """
        y = self._check_batch(x, y)
        return self.train_blocks(x, y, FeatureBank(x, self.mean, self.std), 0, self.k,
                                 backward, after_block)

    def train_blocks(self, h: torch.Tensor, y: Any, bank: FeatureBank, first: int, last: int,
                     backward: Optional[Callable[[torch.Tensor], None]] = None,
                     after_block: Optional[Callable[[int], None]] = None,
                     sources: Optional[Sequence[nn.Module]] = None) -> torch.Tensor:
        """``train_step`` for blocks ``first .. last-1`` only, from their input ``h`` (one
        step protocol for a whole network and for a pipeline stage). ``sources``
        replaces ``ema_sources()`` (a stage tracks a unit living on another rank
        through a local mirror of it); block ``last-1``'s detached output is left in
        ``self.last_output``."""
        losses: List[torch.Tensor] = []
        early = self.ema_timing == "before-step" and len(self.bridges) > 0
        if early and sources is None:
            sources = self.ema_sources()
        for j, loss in self.run_blocks(h, y, bank, first, last):
            if backward is None:
                loss.backward()
            else:
                backward(loss)
            losses.append(loss.detach())
            if early and j < len(self.bridges):
                ema_update([self.bridges[j]], [sources[j]], self.ema_momentum)
            if after_block is not None:
                after_block(j)
        return torch.stack(losses)

    def ema_sources(self) -> List[nn.Module]:
        """The live unit each bridge's EMA copy tracks (first unit of block j+1)."""
        return [self.model.units[self.ranges[j + 1][0]] for j in range(len(self.bridges))]

    def ema_update(self) -> None:
        """One fused EMA step of every bridge towards the unit it tracks (after the
        optimizer steps); nothing under ``ema_timing="before-step"``, where
        ``train_step`` already moved each copy."""
        if len(self.bridges) and self.ema_timing == "after-step":
            ema_update(list(self.bridges), self.ema_sources(), self.ema_momentum)
