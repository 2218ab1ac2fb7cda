"""Semantic segmentation: a class id per pixel (255 ignored), pixel-wise CE, mIoU."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ConfigTypeError
from .base import TASKS, Task
from .seg_metrics import IGNORE_INDEX, SegmentationMetrics


def upsample(logits: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Logits at the mask's size: bilinear, as torchvision's DeepLabV3 / FCN do."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


class PixelPredictor(nn.Sequential):
    """conv3x3-BN-ReLU then a 1x1 conv to class scores: the small dense predictor that
    auxiliary heads end in (torchvision's FCNHead, with a floor of 16 hidden channels so
    that narrow early features keep a usable width)."""

    def __init__(self, channels: int, num_classes: int, width: int = 0) -> None:
        hidden = width or max(16, channels // 4)
        super().__init__(nn.Conv2d(channels, hidden, 3, padding=1, bias=False),
                         nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                         nn.Conv2d(hidden, num_classes, 1))


class Segmentation(Task):
    name = "segmentation"
    columns = ("miou", "mean_acc", "pixel_acc")
    primary = "miou"
    target = f"masks [B, H, W] of class ids ({IGNORE_INDEX} = ignore)"

    def check_target(self, y: object, x: torch.Tensor, num_classes: int) -> torch.Tensor:
        """``y`` as int64 masks the size of the images; ids in 0..C-1 or 255 (checked for
        masks in host memory only: on an accelerator it would cost a sync per step)."""
        if not isinstance(y, torch.Tensor):
            raise ConfigTypeError(f"y must be a torch.Tensor of {self.target}, got "
                                  f"{type(y).__name__}")
        if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
            raise ConfigTypeError(f"y must hold integer class ids per pixel, got {y.dtype}")
        if y.dim() != 3 or y.shape[0] != x.shape[0]:
            raise ConfigError(f"y must be masks [B, H, W], one per image; x has {x.shape[0]} "
                              f"images but y has shape {tuple(y.shape)}")
        if tuple(y.shape[1:]) != tuple(x.shape[2:]):
            raise ConfigError(f"the masks are {y.shape[1]}x{y.shape[2]} but the images "
                              f"{x.shape[2]}x{x.shape[3]}; image and mask must have one size")
        if y.device != x.device:
            raise ConfigError(f"x is on {x.device} but y on {y.device}; move both to one device")
        if y.device.type == "cpu" and y.numel():
            bad = y[(y != IGNORE_INDEX) & ((y < 0) | (y >= num_classes))]
            if bad.numel():
                raise ConfigError(f"y holds class id {int(bad[0])}, outside the model's "
                                  f"classes 0..{num_classes - 1} (and {IGNORE_INDEX} = ignore)")
        return y if y.dtype == torch.int64 else y.long()

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # a batch whose every pixel is ignored gives 0, not NaN (CE's mean over nothing)
        logits = upsample(output, tuple(target.shape[-2:])).float()
        per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")
        return per_pixel / (target != IGNORE_INDEX).sum().clamp_min(1)

    def predictor(self, channels: int, num_classes: int, reduction: int = 1,
                  width: int = 0) -> nn.Module:
        return PixelPredictor(channels, num_classes, width)

    def predict(self, output: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        return upsample(output, size).argmax(1)

    def metric(self, num_classes: int, device: torch.device) -> "SegMetric":
        return SegMetric(num_classes, device)

    def example_target(self, batch: int, size: Tuple[int, int], num_classes: int,
                       generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, num_classes, (batch, *size), generator=generator)


class SegMetric(SegmentationMetrics):
    """``SegmentationMetrics`` fed the network's (possibly lower-resolution) logits."""

    def __init__(self, num_classes: int, device: torch.device) -> None:
        super().__init__(num_classes, device=device)

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        super().update(upsample(output, tuple(target.shape[-2:])).argmax(1), target)


TASKS.add(Segmentation.name, Segmentation())
