"""Peak memory of one training step, on any device.

On CPU the activation term comes from ``torch.autograd.graph.saved_tensors_hooks``:
every tensor autograd saves for backward is counted once per storage while it is
alive (views of one storage count once; a storage is released when the last saved
reference to it is freed, i.e. when its block's graph is backpropagated). Not
counted: transient tensors never saved by autograd (e.g. a conv's output that only
feeds a BatchNorm that saves its own input), allocator slack and fragmentation.
Parameters, gradients and optimizer state are computed from the tensors themselves.
``measure.live.LivePeak`` measures the other way round: every live tensor, as an
allocator would (it also sees what ``torch.utils.checkpoint`` re-runs in backward).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional, Sequence

import torch

if TYPE_CHECKING:  # local_net imports this module (memory-balanced splits)
    from ..local_net import LocalNet


class _Saved:
    """Packed saved tensor: releases its storage's count when autograd frees it."""

    __slots__ = ("tensor", "meter", "key")

    def __init__(self, tensor: torch.Tensor, meter: "ActivationMeter") -> None:
        self.tensor, self.meter = tensor, meter
        self.key = meter._acquire(tensor)

    def __del__(self) -> None:
        if self.key is not None:
            self.meter._release(self.key)


class ActivationMeter:
    """Counts the bytes of live saved tensors; ``peak`` is the maximum seen."""

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self.current = 0
        self.peak = 0
        self._refs: Dict[int, list] = {}
        # parameters and buffers are counted as such, not as activations
        self._exclude = {t.untyped_storage().data_ptr() for t in exclude}

    def _acquire(self, t: torch.Tensor) -> Optional[int]:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in self._exclude:
            return None
        entry = self._refs.get(key)
        if entry is None:
            self._refs[key] = [1, storage.nbytes()]
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        else:
            entry[0] += 1
        return key

    def _release(self, key: int) -> None:
        entry = self._refs[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self._refs[key]

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(lambda t: _Saved(t, self),
                                                        lambda s: s.tensor)


@dataclass
class StepMemory:
    """Bytes of one training step; ``total`` = params + grads + optimizer + activations."""

    param_bytes: int
    grad_bytes: int
    optim_bytes: int
    activation_bytes: int

    @property
    def total(self) -> int:
        return self.param_bytes + self.grad_bytes + self.optim_bytes + self.activation_bytes

    def to_dict(self) -> Dict[str, int]:
        return {**asdict(self), "peak_bytes": self.total}


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def measure_step_memory(net: "LocalNet", x: torch.Tensor, y: torch.Tensor,
                        after_block: Optional[Callable[[int], None]] = None) -> StepMemory:
    """Run one ``train_step`` under the meter.

    Parameters include buffers (BN statistics, the frozen EMA copies). Optimizer
    state is one momentum buffer per trainable parameter (SGD). Gradients: with
    ``after_block`` (stepping and dropping each block's gradients right after its
    backward) the largest block's, else all of them; grads left on ``net`` are the
    caller's to zero.
    """
    meter = ActivationMeter(exclude=[*net.parameters(), *net.buffers()])
    with meter.hooks():
        net.train_step(x, y, after_block=after_block)
    params = list(net.parameters())
    trainable = [p for p in params if p.requires_grad]
    if after_block is None:
        grads = sum(_nbytes(p) for p in trainable)
    else:
        grads = max(sum(_nbytes(p) for p in net.block_parameters(j)) for j in range(net.k))
    return StepMemory(
        param_bytes=sum(_nbytes(p) for p in params) + sum(_nbytes(b) for b in net.buffers()),
        grad_bytes=grads,
        optim_bytes=sum(_nbytes(p) for p in trainable),
        activation_bytes=meter.peak,
    )


def unit_activation_costs(units: Sequence[torch.nn.Module], x: torch.Tensor) -> List[int]:
    """Bytes each unit saves for backward on input ``x`` (BN running stats untouched)."""
    from ..momentum import _frozen_bn_stats

    costs: List[int] = []
    params = [p for u in units for p in u.parameters()] + [b for u in units for b in u.buffers()]
    for unit in units:
        meter = ActivationMeter(exclude=params)
        with _frozen_bn_stats(unit), meter.hooks():
            y = unit(x)
        costs.append(meter.peak)
        x = y.detach()
        del y
    return costs
