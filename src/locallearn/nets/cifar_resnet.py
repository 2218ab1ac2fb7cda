"""CIFAR-style ResNets (He et al. 2016): 3 stages of BasicBlocks, widths 16/32/64."""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from .pool import spatial_mean
from .registry import MODELS
from .units import UnitInfo, UnitNet


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class Stem(nn.Sequential):
    def __init__(self, in_chans: int, width: int) -> None:
        super().__init__(_conv3x3(in_chans, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a (projection when shapes change) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class Classifier(nn.Module):
    """Global average pool + linear layer: the task head unit."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(spatial_mean(x))


class CifarResNet(UnitNet):
    """ResNet-(6n+2): stem, 3n BasicBlocks, classifier; one unit each."""

    def __init__(self, depth: int, num_classes: int = 10, in_chans: int = 3,
                 widths: tuple = (16, 32, 64)) -> None:
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        units: List[nn.Module] = [Stem(in_chans, widths[0])]
        info = [UnitInfo("stem", widths[0], 1)]
        cin, reduction = widths[0], 1
        for stage, width in enumerate(widths):
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                reduction *= stride
                units.append(BasicBlock(cin, width, stride))
                info.append(UnitInfo(f"layer{stage + 1}.{i}", width, reduction))
                cin = width
        units.append(Classifier(cin, num_classes))
        info.append(UnitInfo("fc", num_classes, reduction, kind="head"))
        # recipe: greedy (pool + linear) for bridge-only specs such as ``manpp`` (the MAN
        # papers' CIFAR default); infopro / dgl keep their families' CIFAR defaults
        super().__init__(units, info, in_chans, num_classes, input_size=(in_chans, 32, 32))
        self.depth = depth
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def _register(depth: int) -> None:
    def build(num_classes: int = 10, in_chans: int = 3) -> CifarResNet:
        return CifarResNet(depth, num_classes=num_classes, in_chans=in_chans)

    build.__doc__ = f"CIFAR ResNet-{depth} ({(depth - 2) // 2} residual units + stem)."
    MODELS.add(f"resnet{depth}", build)


for _d in (20, 32, 56, 110):
    _register(_d)
