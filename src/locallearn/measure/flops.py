"""FLOPs of one training step (forward + backward of every block and head)."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..local_net import LocalNet


def step_flops(net: LocalNet, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs counted by ``torch.utils.flop_counter`` for one ``train_step``.

    Counts matmuls and convolutions (forward and backward); element-wise ops,
    normalisation and the optimizer are not counted, as in the papers' estimates.
    Gradients are left on ``net``: zero them afterwards.
    """
    with FlopCounterMode(display=False) as counter:
        net.train_step(x, y)
    return int(counter.get_total_flops())
