"""Where one training step's time and FLOPs go, by part of the network.

A profile by op (``torch.profiler``) says *what kind* of work runs (convolutions, batch
norm, ...); this one says *which part* runs it: the backbone units, MAN++'s EMA and
learnable copies and their mix, each child of the auxiliary heads, the heads' own losses,
the optimizer. Forward work is charged to the innermost labelled module running; backward
work to the module whose forward created the autograd node being run (autograd's sequence
numbers link the two), so a convolution's backward counts where its forward ran.
"""
from __future__ import annotations

import collections
import contextlib
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Tuple

import torch
from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from ..local_net import LocalNet
from ..optim import BlockOptimizers

OTHER = "other (final CE, autograd, Python)"
OPTIM = "optimizer steps + EMA update"


@dataclass
class PartCost:
    """CPU seconds (self time of every op, forward + backward) and GFLOP of one part."""

    seconds: float
    gflop: float


def component_labels(net: LocalNet) -> Dict[nn.Module, str]:
    """The part each module of ``net`` belongs to."""
    labels: Dict[nn.Module, str] = {u: "backbone units" for u in net.model.units}
    for b in net.bridges:
        labels[b] = "MAN++ mix"
        labels[b.ema] = "EMA copy"
        if b.lb is not None:
            labels[b.lb] = "learnable copy"
    for h in net.heads:
        labels[h] = "head: losses"  # what the head's forward runs outside its children
        for name, child in h.named_children():
            labels[child] = f"head: {name}"
    return labels


def _next_seq() -> int:
    """The sequence number autograd gives the next node it creates on this thread."""
    with torch.enable_grad():
        return int(torch.zeros((), requires_grad=True).mul(1).grad_fn._sequence_nr()) + 1


class Parts:
    """Runs each labelled module's forward in a profiler range ``L:<label>`` and records
    the span of autograd sequence numbers it created (innermost module wins)."""

    def __init__(self, labels: Dict[nn.Module, str]) -> None:
        self.labels = labels
        self.stack: List[Tuple[str, int, record_function]] = []
        self.spans: List[Tuple[int, int, str]] = []

    def _pre(self, mod: nn.Module, _args: Any) -> None:
        rf = record_function("L:" + self.labels[mod])
        rf.__enter__()
        self.stack.append((self.labels[mod], _next_seq(), rf))

    def _post(self, _mod: nn.Module, _args: Any, _out: Any) -> None:
        label, start, rf = self.stack.pop()
        self.spans.append((start, _next_seq(), label))
        rf.__exit__(None, None, None)

    def label_of_seq(self, seq: int) -> str:
        inside = [(end - start, label) for start, end, label in self.spans if start <= seq < end]
        return min(inside)[1] if inside else OTHER

    def current(self) -> str:
        return self.stack[-1][0] if self.stack else OTHER

    @contextlib.contextmanager
    def hooked(self) -> Iterator["Parts"]:
        handles = [h for m in self.labels for h in (m.register_forward_pre_hook(self._pre),
                                                    m.register_forward_hook(self._post))]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            self.spans.clear()


class _PartFlops(TorchDispatchMode):
    """``torch.utils.flop_counter``'s formulas, summed per part."""

    def __init__(self, parts: Parts) -> None:
        super().__init__()
        self.parts = parts
        self.gflop: Dict[str, float] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            node = torch._C._current_autograd_node()
            label = (self.parts.current() if node is None
                     else self.parts.label_of_seq(node._sequence_nr()))
            self.gflop[label] += count(*args, **kwargs, out_val=out) / 1e9
        return out


def _label_of(ev: Any, parts: Parts) -> str:
    """A profiler event's part: the creator of the backward node it runs in, else the
    innermost labelled range it runs in."""
    node = ev
    while node is not None:
        if node.name.startswith("autograd::engine::evaluate_function"):
            return parts.label_of_seq(node.sequence_nr)
        if node.name.startswith("L:"):
            return node.name[2:]
        node = node.cpu_parent
    return OTHER


def component_profile(net: LocalNet, opt: BlockOptimizers, x: torch.Tensor,
                      y: torch.Tensor, warmup: int = 2) -> Dict[str, PartCost]:
    """Time (one profiled step after ``warmup``) and FLOPs (one counted step) by part.

    The seconds are CPU self time under ``torch.profiler``, which slows small ops: read
    shares and per-part FLOP rates, not absolute step times.
    """

    def after_block(j: int) -> None:
        with record_function("L:" + OPTIM):
            opt.after_block(j)

    def step() -> None:
        net.train_step(x, y, after_block=after_block)
        with record_function("L:" + OPTIM):
            opt.finish()
            net.ema_update()

    for _ in range(warmup):
        step()
    parts = Parts(component_labels(net))
    seconds: Dict[str, float] = collections.Counter()
    with parts.hooked():  # read the events while this step's spans are known
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        for ev in prof.events():
            seconds[_label_of(ev, parts)] += ev.self_cpu_time_total / 1e6
    with parts.hooked(), _PartFlops(parts) as counter:
        step()
    return {lab: PartCost(seconds.get(lab, 0.0), counter.gflop.get(lab, 0.0))
            for lab in sorted(set(seconds) | set(counter.gflop))}
