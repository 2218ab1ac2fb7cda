"""A CPU-sized DeepLabV3: the CIFAR ResNet-20 trunk and a narrow ASPP head.

For small images (the 64x64 fmnist-scenes benchmark on two CPU cores): the 16/32/64-wide
ResNet-20 trunk of ``cifar_resnet`` (stride 1 stem, output stride 4) and DeepLabV3's head
(torchvision's ``ASPP`` + 3x3 conv-BN-ReLU + 1x1 to classes, as ``DeepLabHead``) at width
64 instead of 256, with atrous rates 2/4/6 instead of 12/24/36: on 16x16 maps the paper's
rates would make the 3x3 branches read mostly padding. About 0.5M parameters; a step
costs a tenth of ``deeplabv3_resnet18``'s at 64x64. No torchvision counterpart: its
export is its own state dict (``create_model("deeplabv3_resnet20", ...)`` loads it).
"""
from __future__ import annotations

from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from .cifar_resnet import CifarResNet
from .deeplab import SEG_INFOPRO
from .registry import MODELS
from .units import UnitInfo, UnitNet


class NarrowDeepLabHead(nn.Sequential):
    """``DeepLabHead`` at a chosen width and atrous rates."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 64,
                 rates: tuple = (2, 4, 6)) -> None:
        super().__init__(ASPP(in_channels, list(rates), width),
                         nn.Conv2d(width, width, 3, padding=1, bias=False),
                         nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, num_classes, 1))


def deeplabv3_resnet20(num_classes: int = 21, in_chans: int = 3) -> UnitNet:
    """DeepLabV3 head on the CIFAR ResNet-20 trunk (output stride 4), random init."""
    trunk = CifarResNet(20, num_classes=num_classes, in_chans=in_chans)
    units = list(trunk.units)[:-1] + [NarrowDeepLabHead(64, num_classes)]
    info = trunk.unit_info[:-1] + [UnitInfo("classifier", num_classes, 4, kind="head")]
    return UnitNet(units, info, in_chans, num_classes, default_head="infopro",
                   default_head_opts=SEG_INFOPRO, task="segmentation",
                   input_size=(in_chans, 64, 64))


MODELS.add("deeplabv3_resnet20", deeplabv3_resnet20)
