"""Super-resolution: the high-resolution image is the target; L1 loss; PSNR / SSIM per image.

The registered instance knows no scale; ``for_model`` gives the one bound to a network's
upscaling factor (its predictor upsamples by it, its targets must be that much larger)
and ``for_data`` the one bound to a dataset's evaluation rule (Y channel with a
``scale`` border on benchmark-style sets, RGB with ``scale + 6`` on DIV2K:
``sr_rules``). Networks output RGB in [0, 1] (EDSR adds its mean shift back itself).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ConfigTypeError
from .base import TASKS, Task
from .sr_rules import RULES

if TYPE_CHECKING:
    from .sr_metrics import SRMetric


@dataclasses.dataclass(frozen=True)
class SuperResolution(Task):
    """``scale``: the upscaling factor (0: unbound, as registered); ``rule``: the metric's."""

    scale: int = 0
    rule: str = "y"

    name = "super_resolution"
    columns = ("psnr", "ssim")
    primary = "psnr"
    target = "high-resolution images [B, C, H*scale, W*scale] in [0, 1]"

    def for_model(self, model: nn.Module) -> "SuperResolution":
        scale = getattr(model, "scale", None)
        if not isinstance(scale, int) or scale < 2:
            raise ConfigError(f"a super-resolution model needs an integer .scale >= 2 (its "
                              f"upscaling factor); {type(model).__name__} has {scale!r}")
        return dataclasses.replace(self, scale=scale)

    def for_data(self, data: Any) -> "SuperResolution":
        scale, rule = getattr(data, "scale", self.scale), getattr(data, "eval_rule", self.rule)
        if self.scale and scale != self.scale:
            raise ConfigError(f"the model upscales x{self.scale} but dataset "
                              f"{getattr(data, 'name', '?')!r} is x{scale}; pick an x{scale} "
                              f"model (e.g. edsr_baseline_x{scale}) or the dataset's "
                              f":scale={self.scale}")
        if rule not in RULES:
            raise ConfigError(f"dataset evaluation rule {rule!r} is not one of {', '.join(RULES)}")
        return dataclasses.replace(self, scale=scale, rule=rule)

    def _scale(self) -> int:
        if not self.scale:
            raise ConfigError("the super-resolution task is not bound to a model: use "
                              "get_task('super_resolution').for_model(model)")
        return self.scale

    def check_target(self, y: object, x: torch.Tensor, num_classes: int) -> torch.Tensor:
        """``y`` as float HR images exactly ``scale`` x the size of ``x``."""
        s = self._scale()
        if not isinstance(y, torch.Tensor):
            raise ConfigTypeError(f"y must be a torch.Tensor of {self.target}, got "
                                  f"{type(y).__name__}")
        if not y.dtype.is_floating_point:
            raise ConfigTypeError(f"y must hold float images in [0, 1], got {y.dtype}")
        want = (x.shape[0], num_classes, x.shape[2] * s, x.shape[3] * s)
        if tuple(y.shape) != want:
            raise ConfigError(f"y has shape {tuple(y.shape)} but a x{s} model on inputs "
                              f"{tuple(x.shape)} needs targets {want}: the high-resolution "
                              f"image must be {s}x the low-resolution one")
        if y.device != x.device:
            raise ConfigError(f"x is on {x.device} but y on {y.device}; move both to one device")
        return y

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if output.shape != target.shape:
            raise ConfigError(f"the prediction is {tuple(output.shape)} but the target "
                              f"{tuple(target.shape)}")
        return F.l1_loss(output.float(), target.float())

    def predictor(self, channels: int, num_classes: int, reduction: int = 1,
                  width: int = 0) -> nn.Module:
        from ..nets.edsr import SRPredictor  # nets import tasks' names lazily too

        if reduction != 1:
            raise ConfigError(f"a super-resolution predictor reads full low-resolution "
                              f"features, not ones at 1/{reduction}")
        return SRPredictor(channels, self._scale(), num_classes)

    def predict(self, output: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        return output.clamp(0.0, 1.0)

    def metric(self, num_classes: int, device: torch.device) -> "SRMetric":
        from .sr_metrics import SRMetric  # torchmetrics: imported when a metric is made

        return SRMetric(self._scale(), self.rule).to(device)

    def example_target(self, batch: int, size: Tuple[int, int], num_classes: int,
                       generator: torch.Generator) -> torch.Tensor:
        s = self._scale()
        return torch.rand(batch, num_classes, size[0] * s, size[1] * s, generator=generator)

    def show(self, column: str, value: float) -> str:
        return f"{value:.2f} dB" if column == "psnr" else f"{value:.4f}"


TASKS.add(SuperResolution.name, SuperResolution())
