"""Linear probes: how linearly separable the classes are in a layer's (frozen) output."""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

from ..errors import ConfigError


def pool(h: torch.Tensor, layout: str = "maps") -> torch.Tensor:
    """One vector per example: the global average over space of maps [B, C, H, W], the
    mean over tokens of [B, N, C]; [B, C] stays as it is."""
    if h.dim() == 2:
        return h
    if layout == "tokens" and h.dim() == 3:
        return h.mean(1)
    if h.dim() >= 3:
        return h.flatten(2).mean(-1)
    raise ConfigError(f"cannot pool a feature of shape {tuple(h.shape)} to [B, C]")


def train_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                test_y: torch.Tensor, num_classes: int, *, iters: int = 100,
                weight_decay: float = 1e-4, seed: int = 0) -> Dict[str, float]:
    """A linear classifier on features [N, C] (standardised with the train statistics),
    fit full-batch by L-BFGS on cross-entropy + ``weight_decay`` * ||W||² for ``iters``
    iterations; returns ``{"train_acc", "test_acc"}``.

    Deterministic: the problem is convex and starts from zero weights (``seed`` only
    fixes torch's global state for ops that might draw from it).
    """
    if train_x.dim() != 2 or test_x.dim() != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ConfigError(f"probe features must be [N, C] on both splits, got "
                          f"{tuple(train_x.shape)} and {tuple(test_x.shape)}")
    if len(train_x) != len(train_y) or len(test_x) != len(test_y) or len(train_x) == 0:
        raise ConfigError(f"probe needs one label per example and some examples, got "
                          f"{len(train_x)} train / {len(train_y)} labels and {len(test_x)} "
                          f"test / {len(test_y)} labels")
    if num_classes < 2:
        raise ConfigError(f"a probe needs >= 2 classes, got {num_classes}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        xtr, xte = train_x.double().cpu(), test_x.double().cpu()
        ytr, yte = train_y.long().cpu(), test_y.long().cpu()
        mean = xtr.mean(0)
        std = xtr.std(0, unbiased=False).clamp_min(1e-8)  # a dead channel stays 0, not NaN
        xtr, xte = (xtr - mean) / std, (xte - mean) / std
        w = torch.zeros(xtr.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=iters, history_size=20,
                                tolerance_grad=1e-9, tolerance_change=1e-12,
                                line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(xtr @ w + b, ytr) + weight_decay * (w * w).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        with torch.no_grad():
            train_acc = float(((xtr @ w + b).argmax(1) == ytr).double().mean())
            test_acc = float(((xte @ w + b).argmax(1) == yte).double().mean()) if len(yte) else \
                float("nan")
    return {"train_acc": train_acc, "test_acc": test_acc}
