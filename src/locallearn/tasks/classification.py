"""Image classification: one class index per image, cross-entropy, top-1 accuracy."""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ConfigTypeError
from ..nets.pool import spatial_mean
from .base import TASKS, Task


class PooledLinear(nn.Linear):
    """Global average pool (maps or tokens) then a linear classifier: the greedy predictor."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(spatial_mean(features))


class Accuracy:
    """Top-1 accuracy over everything seen (exact counts, one host read in ``compute``)."""

    def __init__(self, device: torch.device) -> None:
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.count = 0

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        self.correct += (output.argmax(1) == target).sum()
        self.count += target.numel()

    def compute(self) -> Dict[str, float]:
        return {"acc": self.correct.item() / max(1, self.count)}


class Classification(Task):
    name = "classification"
    columns = ("acc",)
    primary = "acc"
    target = "class indices [B] (torch.int64)"

    def check_target(self, y: object, x: torch.Tensor, num_classes: int) -> torch.Tensor:
        """``y`` as int64 class indices, one per image of ``x``.

        Everything but the label range reads only metadata: free, no host sync. The range
        check is a reduction the host must read, so it runs only for labels in host memory
        (a cheap pass over B ints): on an accelerator it would be one device->host sync per
        step in a loop that is otherwise sync-free. The CLI's datasets validate their
        labels once, when loaded.
        """
        if not isinstance(y, torch.Tensor):
            raise ConfigTypeError(f"y must be a torch.Tensor of class indices, got "
                                  f"{type(y).__name__}")
        if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
            raise ConfigTypeError(f"y must hold integer class indices (torch.int64), got "
                                  f"{y.dtype}; use y.long() if it holds whole numbers")
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ConfigError(f"y must be a 1-D tensor of one label per sample, x has "
                              f"{x.shape[0]} samples but y has shape {tuple(y.shape)}")
        if y.device != x.device:
            raise ConfigError(f"x is on {x.device} but y on {y.device}; move both to one device")
        if y.device.type == "cpu":
            lo, hi = (int(v) for v in torch.aminmax(y))
            if lo < 0 or hi >= num_classes:
                bad = lo if lo < 0 else hi
                raise ConfigError(f"y holds label {bad}, outside the model's classes 0.."
                                  f"{num_classes - 1} (num_classes={num_classes})")
        return y if y.dtype == torch.int64 else y.long()

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target)

    def predictor(self, channels: int, num_classes: int, reduction: int = 1,
                  width: int = 0) -> nn.Module:
        if width:  # never ignored silently
            raise ConfigError(f"the classification predictor is one linear layer: it has no "
                              f"width (got width={width}); width is for dense tasks")
        return PooledLinear(channels, num_classes)

    def predict(self, output: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        return output.argmax(1)

    def metric(self, num_classes: int, device: torch.device) -> Accuracy:
        return Accuracy(device)

    def example_target(self, batch: int, size: Tuple[int, int], num_classes: int,
                       generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, num_classes, (batch,), generator=generator)


TASKS.add(Classification.name, Classification())
