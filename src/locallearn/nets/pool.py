"""Global average pooling whose gradient keeps the input's memory layout.

``x.mean((2, 3))`` and ``nn.AdaptiveAvgPool2d(1)`` on a channels_last map hand back a
gradient in the default (NCHW) layout, so every op behind the pool in backward (ReLU,
batch norm, convolution) mixes layouts and runs a slow path or converts. Averaging a
permuted NHWC view instead keeps the gradient channels_last: same values.
"""
from __future__ import annotations

import torch
from torch import nn


def spatial_mean(x: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """Mean over the spatial dims of a [B, C, H, W] map: [B, C] (or [B, C, 1, 1])."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        m = x.permute(0, 2, 3, 1).mean(dim=(1, 2), keepdim=keepdim)
        return m.permute(0, 3, 1, 2) if keepdim else m
    return x.mean(dim=(2, 3), keepdim=keepdim)


class GlobalAvgPool(nn.Module):
    """Drop-in for ``nn.AdaptiveAvgPool2d(1)`` (output [B, C, 1, 1]) via ``spatial_mean``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spatial_mean(x, keepdim=True)
