"""Small helpers for torchvision ResNet trunks, shared by the dense-task families
(DeepLab, RetinaNet)."""
from __future__ import annotations

from torch import nn


def set_in_chans(body: nn.Module, in_chans: int) -> None:
    """A new first conv for ``in_chans`` input channels (e.g. grayscale), ResNet's init."""
    if in_chans == body.conv1.in_channels:
        return
    old = body.conv1
    body.conv1 = nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride,
                           old.padding, bias=False)
    nn.init.kaiming_normal_(body.conv1.weight, mode="fan_out", nonlinearity="relu")


def out_channels(block: nn.Module) -> int:
    """Output channels of a torchvision BasicBlock / Bottleneck (its last BN's width)."""
    last_bn = getattr(block, "bn3", None) or block.bn2
    return last_bn.num_features
