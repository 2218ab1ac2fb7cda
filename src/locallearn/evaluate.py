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
def evaluate_metrics(net: LocalNet, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
                     device: torch.device, amp: str = "none") -> Dict[str, float]:
    """The task's metric of the backbone (heads unused) over all of ``batches``:
    ``{"acc"}`` for classification, ``{"miou", "mean_acc", "pixel_acc"}`` for segmentation."""
    was_training = net.training
    net.eval()
    metric = net.task.metric(net.model.num_classes, device)
    with autocast(device, amp):
        for x, y in batches:
            metric.update(net(x), y)
    net.train(was_training)
    return metric.compute()


def evaluate(net: LocalNet, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
             device: torch.device, amp: str = "none") -> float:
    """The task's primary metric of the backbone (top-1 accuracy, mIoU, ...)."""
    return evaluate_metrics(net, batches, device, amp)[net.task.primary]


@torch.no_grad()
def evaluate_heads(net: LocalNet, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
                   device: torch.device, amp: str = "none") -> List[Optional[float]]:
    """The task's primary metric of every block's predictor (``LocalNet.head_logits``):
    top-1 accuracy, mIoU, ...; None for heads without one (a SupCon head). The last entry
    is the network's own."""
    was_training = net.training
    net.eval()
    metrics = [net.task.metric(net.model.num_classes, device) for _ in range(net.k)]
    has = [True] * net.k
    with autocast(device, amp):
        for x, y in batches:
            for j, scores in enumerate(net.head_logits(x)):
                if scores is None:
                    has[j] = False
                else:
                    metrics[j].update(scores, y)
    net.train(was_training)
    return [m.compute()[net.task.primary] if ok else None for m, ok in zip(metrics, has)]


def head_report(net: LocalNet, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
                device: torch.device) -> List[Dict[str, Any]]:
    """One row per block: its units, its predictor's test metric (``evaluate_heads``; the
    key is ``test_<primary>``, e.g. ``test_acc``), and for the bridge after it MAN++'s
    scale and the EMA copy's lag (None where absent)."""
    accs = evaluate_heads(net, batches, device)
    pad = [None] * (net.k - len(net.bridges))  # no bridge after the last block (or any)
    scales = net.bridge_scales() + pad
    lags: List[Optional[float]] = [*net.ema_lags(), *pad]
    key = f"test_{net.task.primary}"
    return [{"block": j, "units": list(net.ranges[j]), key: acc, "bridge_scale": s,
             "ema_lag": lag}
            for j, (acc, s, lag) in enumerate(zip(accs, scales, lags))]
