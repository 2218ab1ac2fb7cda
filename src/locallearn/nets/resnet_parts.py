"""Small helpers for torchvision ResNet trunks, shared by the dense-task families
(DeepLab, RetinaNet)."""
from __future__ import annotations

from typing import Dict, List, Tuple

from torch import nn

from .units import UnitInfo

#: ResNet depths torchvision builds (18/34: BasicBlock, 50/101/152: Bottleneck)
DEPTHS: Tuple[int, ...] = (18, 34, 50, 101, 152)


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


def trunk_units(body: nn.Module,
                writes: Dict[int, str]) -> Tuple[List[nn.Module], List[UnitInfo], int]:
    """A torchvision ResNet trunk as units: the stem (conv1, bn1, relu, maxpool), then
    every residual block of layer1..layer4, sharing ``body``'s modules; the last block of
    layer ``li`` writes bank feature ``writes[li]`` where given. Sizes come from the
    strides (no dry run: it builds on the meta device). Returns (units, infos, the
    trunk's output reduction)."""
    units: List[nn.Module] = [nn.Sequential(body.conv1, body.bn1, body.relu, body.maxpool)]
    info = [UnitInfo("stem", body.conv1.out_channels, 4)]  # conv1 s2, maxpool s2
    reduction = 4
    for li in range(1, 5):
        layer = getattr(body, f"layer{li}")
        for bi, block in enumerate(layer):
            reduction *= block.stride  # 1 for dilated blocks
            last = bi == len(layer) - 1
            units.append(block)
            info.append(UnitInfo(f"layer{li}.{bi}", out_channels(block), reduction,
                                 writes=writes.get(li) if last else None))
    return units, info, reduction
