"""Evaluation of a LocalNet: the network's accuracy, each block's head, the bridges."""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch

from .errors import ConfigError
from .local_net import LocalNet


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Autocast for ``amp`` in {none, bf16, fp16} on the device's type."""
    if amp == "none":
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError(f"amp 'fp16' needs a CUDA device (got {device}); use --amp bf16")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def evaluate(net: LocalNet, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
             device: torch.device, amp: str = "none") -> float:
    """Top-1 accuracy of the backbone (heads unused) on ``batches``."""
    was_training = net.training
    net.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    count = 0
    with autocast(device, amp):
        for x, y in batches:
            correct += (net(x).argmax(1) == y).sum()
            count += y.numel()
    net.train(was_training)
    return correct.item() / max(1, count)


@torch.no_grad()
def evaluate_heads(net: LocalNet, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
                   device: torch.device, amp: str = "none") -> List[Optional[float]]:
    """Top-1 accuracy of every block's classifier (``LocalNet.head_logits``); None for
    heads without class scores. The last entry is the network's own accuracy."""
    was_training = net.training
    net.eval()
    correct = torch.zeros(net.k, dtype=torch.long, device=device)
    has = [True] * net.k
    count = 0
    with autocast(device, amp):
        for x, y in batches:
            for j, scores in enumerate(net.head_logits(x)):
                if scores is None:
                    has[j] = False
                else:
                    correct[j] += (scores.argmax(1) == y).sum()
            count += y.numel()
    net.train(was_training)
    return [c / max(1, count) if ok else None for c, ok in zip(correct.tolist(), has)]


def head_report(net: LocalNet, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
                device: torch.device) -> List[Dict[str, Any]]:
    """One row per block: its units, its classifier's test accuracy (``evaluate_heads``),
    and for the bridge after it MAN++'s scale and the EMA copy's lag (None where absent)."""
    accs = evaluate_heads(net, batches, device)
    pad = [None] * (net.k - len(net.bridges))  # no bridge after the last block (or any)
    scales = net.bridge_scales() + pad
    lags: List[Optional[float]] = [*net.ema_lags(), *pad]
    return [dict(block=j, units=list(net.ranges[j]), test_acc=acc, bridge_scale=s, ema_lag=lag)
            for j, (acc, s, lag) in enumerate(zip(accs, scales, lags))]
