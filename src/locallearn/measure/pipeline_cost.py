"""How long each block takes, and what that predicts for N devices: E2E under data
parallel (DDP), local learning under DDP, and the pipeline (PPLL).

The model is the simplest one that explains the papers' Table VIII: a DDP step costs the
step of a 1/N batch plus a ring all-reduce of every trainable parameter; a pipeline step
costs its slowest stage (its blocks' forward, local backward and optimizer step, plus
sending its output on), and an epoch adds one pipe fill. The inputs are measured on one
device (``block_seconds``) and for the link (``Link`` bandwidth and latency).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..bank import FeatureBank
from ..nets.units import UnitNet, run_unit
from .timing import _sync


@dataclass
class LinkSpeed:
    """A link between two devices: seconds per message and bytes per second."""

    latency_s: float = 50e-6
    bytes_per_s: float = 5e9

    def send(self, nbytes: float) -> float:
        return self.latency_s + nbytes / self.bytes_per_s

    def allreduce(self, nbytes: float, n: int) -> float:
        """A ring all-reduce over ``n`` devices (2(n-1) steps of nbytes/n)."""
        if n <= 1:
            return 0.0
        return 2 * (n - 1) * (self.latency_s + nbytes / n / self.bytes_per_s)


@dataclass
class StepCosts:
    """One device's measured costs of one training step at one batch size."""

    block_s: List[float]  # each block's forward + local backward + optimizer step
    message_bytes: List[int]  # what block j sends on (output, target, bank), j < K-1
    local_param_bytes: int  # every trainable parameter of the local network (heads too)
    e2e_s: float  # the E2E network's step at the same batch
    e2e_param_bytes: int


def block_seconds(net: Any, opt: Any, x: torch.Tensor, y: Any, repeats: int = 5,
                  warmup: int = 2) -> List[float]:
    """Median seconds of each block's share of a training step (its forward, local
    backward, optimizer step), timed between the step's ``after_block`` calls."""
    device = x.device
    samples: List[List[float]] = [[] for _ in range(net.k)]
    for r in range(warmup + repeats):
        marks: List[float] = []

        def after(j: int) -> None:
            opt.after_block(j)
            _sync(device)
            marks.append(time.perf_counter())

        _sync(device)
        t0 = time.perf_counter()
        net.train_step(x, y, after_block=after)
        net.ema_update()
        if r >= warmup:
            for j, (a, b) in enumerate(zip([t0, *marks[:-1]], marks)):
                samples[j].append(b - a)
    return [sorted(s)[len(s) // 2] for s in samples]


def message_bytes(net: Any, x: torch.Tensor, y: Any) -> List[int]:
    """Bytes a pipeline sends after each block but the last: its output, the feature
    bank (image and stored features) and the target."""
    def nbytes(t: Any) -> int:
        if isinstance(t, torch.Tensor):
            return t.numel() * t.element_size()
        if isinstance(t, dict):
            return sum(nbytes(v) for v in t.values())
        if isinstance(t, (list, tuple)):
            return sum(nbytes(v) for v in t)
        return 0

    out: List[int] = []
    bank = FeatureBank(x, net.mean, net.std)
    with torch.no_grad():
        for j, h in net._walk(x, cut=True, bank=bank):
            if j < net.k - 1:
                out.append(nbytes(h) + nbytes(bank.image) + nbytes(bank.entries()) + nbytes(y))
    return out


def unit_seconds(model: UnitNet, x: torch.Tensor, repeats: int = 3) -> List[float]:
    """Seconds of each body unit's forward + backward on the output of the one before
    (a dry run for ``--split time``; BatchNorm statistics are left as they were)."""
    from ..momentum import _frozen_bn_stats

    units, info = list(model.units)[:-1], model.unit_info
    bank = FeatureBank(x)
    times: List[float] = []
    h = x
    for i, unit in enumerate(units):
        best = float("inf")
        with _frozen_bn_stats(unit):
            for _ in range(repeats + 1):
                inp = h.detach().requires_grad_(True)
                _sync(x.device)
                t0 = time.perf_counter()
                out = run_unit(unit, info[i], inp, bank)
                out.float().sum().backward()
                _sync(x.device)
                best = min(best, time.perf_counter() - t0)
        unit.zero_grad(set_to_none=True)
        times.append(best)
        h = out.detach()
        bank.seal()
    return times


def predict(costs: StepCosts, shard: StepCosts, n: int, steps: int,
            link: Optional[LinkSpeed] = None,
            groups: Optional[Sequence[Sequence[int]]] = None) -> Dict[str, Any]:
    """Predicted seconds per epoch on ``n`` devices of ``steps`` steps at the global batch
    that ``costs`` was measured at (``shard``: the same at batch / n, for DDP)."""
    from ..parallel.stage import assign_blocks

    link = link or LinkSpeed()
    k = len(costs.block_s)
    e2e_ddp = steps * (shard.e2e_s + link.allreduce(shard.e2e_param_bytes, n))
    local_ddp = steps * (sum(shard.block_s) + link.allreduce(shard.local_param_bytes, n))
    out: Dict[str, Any] = {"devices": n, "e2e_ddp_s": e2e_ddp, "local_ddp_s": local_ddp,
                           "local_1dev_s": steps * sum(costs.block_s),
                           "e2e_1dev_s": steps * costs.e2e_s}
    if n <= k:
        ranges = [tuple(g) for g in groups] if groups is not None else \
            assign_blocks(k, n, costs=costs.block_s)
        stage_s = []
        for first, last in ranges:
            send = link.send(costs.message_bytes[last - 1]) if last < k else 0.0
            stage_s.append(sum(costs.block_s[first:last]) + send)
        worst = max(stage_s)
        out.update(ppll_s=steps * worst + sum(stage_s) - worst,  # + one pipe fill
                   stage_s=stage_s, bottleneck_stage=stage_s.index(worst),
                   groups=[list(r) for r in ranges])
    return out
