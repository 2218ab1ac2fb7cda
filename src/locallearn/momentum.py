"""MAN / MAN++ bridges: an EMA copy + a learnable copy of the next block's first unit."""
from __future__ import annotations

import contextlib
import copy
from typing import Iterator, List, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import BRIDGE_INITS, EMA_TIMINGS
from .errors import check_choice
from .reference import reference_init_

BRIDGE_KINDS = ("ema", "man", "manpp")
LB_KINDS = ("unit", "channel")
# when an EMA copy follows its unit: after the optimizer steps (post-step weights), or
# right after its block's backward, before any step (the reference code)
INITS, EMA_TIMINGS = BRIDGE_INITS, EMA_TIMINGS


class ChannelAffine(nn.Module):
    """The paper's lightweight learnable bias: ``a * z + b`` per channel (init identity)."""

    def __init__(self, channels: int, layout: str = "maps") -> None:
        super().__init__()
        shape = (1, channels, 1, 1) if layout == "maps" else (1, 1, channels)  # tokens: [B, N, C]
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # In z's dtype, as autocast runs a conv's float32 weights in bf16/fp16: addcmul is
        # on no autocast list, so float32 parameters would promote a bf16 z to float32,
        # and the MAN/MAN++ mix would then meet two dtypes (the gradients still reach the
        # float32 parameters through the casts).
        return torch.addcmul(self.bias.to(z.dtype), z, self.weight.to(z.dtype))


class MomentumBridge(nn.Module):
    """Maps block j's output through the (EMA, LB) copies of unit ``next_unit``.

    kinds (the MAN++ ablation, Table VII): ``ema``: ``EMA(h)``; ``man``:
    ``LB(h) + EMA(h)``; ``manpp``: ``s*LB(h) + (2-s)*EMA(h)`` with a learnable scalar
    ``s`` (init 1). ``lb="unit"`` makes LB a full trainable copy of the unit (the
    reference code; ``lb_units`` makes it a copy of several units instead, as the ViT
    reference does with two blocks); ``lb="channel"`` a per-channel affine applied to
    ``EMA(h)`` (the paper's lightweight bias). The EMA copy is frozen but differentiable w.r.t. its
    input, so head j's gradient reaches block j through it.

    ``init="copy"`` starts both copies equal to the unit (the paper's intent);
    ``"random"`` starts them from one fresh default (PyTorch) initialisation of the unit,
    equal to each other but not to the unit; ``"reference"`` is what the reference code
    does (it copies the units before its weight-init loop): EMA and LB each redrawn
    independently with that loop's init (``reference.reference_init_``), so they match
    neither the unit nor each other.
    """

    def __init__(self, next_unit: nn.Module, channels: int, kind: str = "manpp",
                 lb: str = "unit", recompute: bool = False, layout: str = "maps",
                 lb_units: Sequence[nn.Module] = (), init: str = "copy") -> None:
        super().__init__()
        self.recompute = recompute
        check_choice("bridge", kind, BRIDGE_KINDS)
        check_choice("lb", lb, LB_KINDS)
        check_choice("bridge init", init, INITS)
        self.kind, self.lb_kind = kind, lb
        if init == "random":
            next_unit = _reinitialised(next_unit)
            lb_units = [next_unit, *(_reinitialised(u) for u in lb_units[1:])] if lb_units else ()
        self.ema = copy.deepcopy(next_unit)
        if init == "reference":  # the EMA copy drawn here, the LB copies below: independent
            reference_init_(self.ema)
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.lb: nn.Module | None = None
        if kind != "ema":
            if lb == "channel":
                self.lb = ChannelAffine(channels, layout)
            elif lb_units:  # e.g. the ViT reference: LB copies the next two blocks
                self.lb = copy.deepcopy(nn.Sequential(*lb_units))
            else:
                self.lb = copy.deepcopy(next_unit)
            if init == "reference" and lb != "channel":
                reference_init_(self.lb)
            for p in self.lb.parameters():
                p.requires_grad_(True)
        self.scale = nn.Parameter(torch.ones(())) if kind == "manpp" else None

    def _run(self, copy_: nn.Module, h: torch.Tensor) -> torch.Tensor:
        """Run one copy; with ``recompute`` keep only its input and output for backward."""
        if not (self.recompute and torch.is_grad_enabled()):
            return copy_(h)
        return checkpoint(copy_, h, use_reentrant=False,
                          context_fn=lambda: (contextlib.nullcontext(), _frozen_bn_stats(copy_)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        e = self._run(self.ema, h)
        if self.lb is None:
            return e
        b = self.lb(e) if self.lb_kind == "channel" else self._run(self.lb, h)
        if b.dtype != e.dtype:  # e.g. a learnable copy kept out of autocast: mix in the wider
            wide = torch.promote_types(b.dtype, e.dtype)
            b, e = b.to(wide), e.to(wide)
        if self.scale is None:
            return b + e
        return ScaledMix.apply(b, e, self.scale)


class ScaledMix(torch.autograd.Function):
    """MAN++'s ``s*b + (2-s)*e`` in two passes forward (one lerp, one scaling) instead of
    four, and, backward, one pass per input gradient plus two dot products for ``s``'s
    (the plain expression makes six full-size products and two sums)."""

    @staticmethod
    def forward(ctx, b: torch.Tensor, e: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(b, e, s)
        w = s.to(b.dtype)
        # lerp(e, b, s/2) = (1-s/2) e + (s/2) b; twice that is the mix
        return torch.lerp(e, b, w * 0.5).mul_(2.0)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        b, e, s = ctx.saved_tensors
        w = s.to(g.dtype)
        gb = g * w if ctx.needs_input_grad[0] else None
        ge = g * (2.0 - w) if ctx.needs_input_grad[1] else None
        gs = _dot(g, b) - _dot(g, e) if ctx.needs_input_grad[2] else None
        return gb, ge, None if gs is None else gs.to(s.dtype).reshape(s.shape)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum()`` in float32 without a product tensor when the layouts allow."""
    dense = a.is_contiguous() or (a.dim() == 4 and a.is_contiguous(memory_format=torch.channels_last))
    if a.dtype == b.dtype == torch.float32 and a.stride() == b.stride() and dense:
        return torch.dot(a.as_strided((a.numel(),), (1,)), b.as_strided((b.numel(),), (1,)))
    return (a.float() * b.float()).sum()


def _reinitialised(unit: nn.Module) -> nn.Module:
    """A copy of ``unit`` with every layer's default initialisation drawn afresh."""
    fresh = copy.deepcopy(unit)
    for m in fresh.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return fresh


@contextlib.contextmanager
def _frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """During the recomputation, BatchNorm must not update its running stats twice."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None
              else None) for m in bns]
    for m in bns:
        m.momentum = 0.0  # running = 1*running + 0*batch: unchanged
    try:
        yield
    finally:
        for m, (mom, nbt) in zip(bns, saved):
            m.momentum = mom
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)


@torch.no_grad()
def ema_update(bridges: Sequence[MomentumBridge], sources: Sequence[nn.Module],
               momentum: float) -> None:
    """``ema <- m*ema + (1-m)*source`` for every bridge, as one fused foreach call."""
    ema_params: List[torch.Tensor] = []
    src_params: List[torch.Tensor] = []
    for bridge, src in zip(bridges, sources):
        ema_params.extend(bridge.ema.parameters())
        src_params.extend(src.parameters())
    if ema_params:
        torch._foreach_lerp_(ema_params, src_params, 1.0 - momentum)
