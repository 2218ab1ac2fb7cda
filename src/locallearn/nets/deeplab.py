"""DeepLabV3 (torchvision) and DeepLabV3+ (Chen et al. 2018) on ResNets, as units.

Units: the stem (conv1, bn1, relu, maxpool), every residual block of layer1..layer4,
then the segmentation head as the task unit. They share the modules of a source model
(``source_model(name, ...)``), so ``export_state_dict()`` loads strictly into a fresh
one; for ``deeplabv3_resnet50/101`` with 3 input channels that is exactly torchvision's
``deeplabv3_resnet50/101(weights=None, weights_backbone=None, num_classes=C,
aux_loss=False)``. Those build their ResNet with plain trainable ``nn.BatchNorm2d``
(``FrozenBatchNorm2d`` is torchvision's detection choice for pretrained backbones), so
every BN of these models trains, locally too.

The head unit outputs logits at the network's output stride (8 for DeepLabV3, 4 for
V3+): the segmentation task upsamples them to the mask size (bilinear,
align_corners=False, what torchvision's forward does), so the loss is the same.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models import ResNet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation import DeepLabV3
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabHead

from ..errors import choice_error
from .registry import MODELS
from .resnet_parts import set_in_chans, trunk_units
from .units import UnitInfo, UnitNet

#: The recipe of MAN++ Table V (Cityscapes, K=2, InfoPro+MAN++): one InfoPro head =
#: reconstruction decoder + the segmentation task's pixel predictor (``classifier``,
#: ``loss``, ``max_width`` are classification-only and do not apply). The paper gives no
#: loss weights for Cityscapes; we take InfoPro's ImageNet ones (5 * BCE + 0.75 * task
#: loss, constant: with K=2 there is one head anyway), the published recipe closest to
#: deep, wide ResNets. ``conv_first``: the head reads 256-1024 channels at 1/4-1/8 of a
#: 768x768 crop; resizing them to full size before the decoder's first conv would hold
#: C x 768 x 768 floats per image (2.4 GB at C=1024), convolving first resizes 12 maps.
SEG_INFOPRO: Dict[str, object] = {"ixx": (5.0, 5.0), "ixy": (0.75, 0.75),
                                  "decoder": "conv_first"}

#: name -> (ResNet depth, V3+ decoder)
VARIANTS: Dict[str, Tuple[int, bool]] = {
    "deeplabv3_resnet18": (18, False), "deeplabv3_resnet50": (50, False),
    "deeplabv3_resnet101": (101, False), "deeplabv3plus_resnet18": (18, True),
    "deeplabv3plus_resnet50": (50, True), "deeplabv3plus_resnet101": (101, True)}


class DeepLabV3PlusHead(nn.Module):
    """The DeepLabV3+ decoder (Chen et al. 2018, Sec. 3.1, Fig. 2 and Tables 1-2).

    ASPP on the stride-16 features (torchvision's ``ASPP``: 1x1 + three atrous 3x3 +
    image pooling, 256 channels, projected by 1x1 conv-BN-ReLU-Dropout(0.5)); the
    stride-4 low-level features reduced by a 1x1 conv to 48 channels + BN + ReLU (the
    paper's choice, so they do not outweigh the 256 ASPP channels); the ASPP output
    upsampled bilinearly to their size and concatenated; two 3x3 conv-BN-ReLU of 256
    (the paper's best refinement, Table 2); a 1x1 conv to class scores. The final x4
    upsampling is left to the task. Convolutions are regular (the paper makes them
    depthwise-separable with its Xception backbone), bilinear resizing uses
    align_corners=False as torchvision does.
    """

    def __init__(self, in_channels: int, low_channels: int, num_classes: int,
                 atrous_rates: Tuple[int, ...] = (6, 12, 18), low_width: int = 48,
                 width: int = 256) -> None:
        super().__init__()
        self.aspp = ASPP(in_channels, atrous_rates, width)
        self.low = nn.Sequential(nn.Conv2d(low_channels, low_width, 1, bias=False),
                                 nn.BatchNorm2d(low_width), nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(
            nn.Conv2d(width + low_width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        """Class logits at the low-level features' size (stride 4)."""
        low = self.low(low)
        x = F.interpolate(self.aspp(x), size=low.shape[-2:], mode="bilinear",
                          align_corners=False)
        return self.classifier(self.fuse(torch.cat([x, low], dim=1)))


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ as one module, laid out like torchvision's ``DeepLabV3``.

    ``backbone`` returns ``{"low": stride-4 maps, "out": stride-16 maps}`` (an
    ``IntermediateLayerGetter`` over a ResNet: ``backbone.conv1``, ``backbone.layer1``,
    ...), ``classifier`` is a ``DeepLabV3PlusHead``. ``forward`` returns
    ``{"out": logits at the input size}``, as torchvision's segmentation models do.
    """

    def __init__(self, backbone: nn.Module, classifier: DeepLabV3PlusHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        features = self.backbone(x)
        out = self.classifier(features["out"], features["low"])
        return {"out": F.interpolate(out, size=x.shape[-2:], mode="bilinear",
                                     align_corners=False)}


def _dilate_basic_stage(layer: nn.Sequential, previous: int, dilation: int) -> None:
    """Trade a BasicBlock stage's stride for dilation, in place.

    torchvision's BasicBlock refuses dilation > 1, so we do by hand what its
    ``replace_stride_with_dilation`` does for Bottleneck: the strided 3x3 conv and the
    1x1 downsample get stride 1; the first block's first 3x3 conv keeps the previous
    dilation, every later 3x3 conv uses ``dilation`` (padding = dilation keeps the size).
    """
    for i, block in enumerate(layer):
        block.stride = 1
        for j, conv in enumerate((block.conv1, block.conv2)):
            d = previous if i == 0 and j == 0 else dilation
            conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


def _trunk(depth: int, dilate: Tuple[bool, bool, bool]) -> ResNet:
    """A torchvision ResNet (random init) whose layer2..4 flagged in ``dilate`` keep
    their input resolution by dilation."""
    if depth != 18:
        return getattr(torchvision.models, f"resnet{depth}")(
            weights=None, replace_stride_with_dilation=list(dilate))
    net = torchvision.models.resnet18(weights=None)
    d = 1
    for flag, layer in zip(dilate, (net.layer2, net.layer3, net.layer4)):
        if flag:
            _dilate_basic_stage(layer, d, 2 * d)
            d *= 2
    return net


def source_model(name: str, num_classes: int = 21, in_chans: int = 3) -> nn.Module:
    """A fresh (random-init) source model of ``name``: what ``export_state_dict()`` of
    ``create_model(name, ...)`` loads into with ``strict=True``.

    DeepLabV3: torchvision's ``DeepLabV3`` (``deeplabv3_resnet50/101`` themselves, with
    output stride 8). ``deeplabv3_resnet18`` also has output stride 8 (layer3 and
    layer4 dilated, torchvision's ``DeepLabHead(512, C)`` with rates 12/24/36 as the
    paper pairs with stride 8). ResNet-18 affords it on a CPU: 4.2 GMACs per 3x128x128
    image against 1.3 at stride 16, but a K=2 infopro+manpp step (64x64, batch 16, two
    shared cores) measured only about 1.6x slower, and stride 8 gives 8x8 logits for a
    64x64 image instead of 4x4. (On such small maps the atrous 3x3 branches see mostly
    padding at either stride; at 512+ pixels they work as in the paper.)
    DeepLabV3+: ``DeepLabV3Plus`` with output stride 16 (layer4 dilated) and ASPP
    rates 6/12/18, the paper's training setting, low-level skip = layer1's output.
    """
    if name not in VARIANTS:
        raise choice_error("DeepLab model", name, sorted(VARIANTS))
    depth, plus = VARIANTS[name]
    if plus:
        trunk = _trunk(depth, (False, False, True))
        backbone = IntermediateLayerGetter(trunk, {"layer1": "low", "layer4": "out"})
        wide = 4 if depth >= 50 else 1  # Bottleneck expansion
        model: nn.Module = DeepLabV3Plus(
            backbone, DeepLabV3PlusHead(512 * wide, 64 * wide, num_classes))
    elif depth == 18:
        backbone = IntermediateLayerGetter(_trunk(18, (False, True, True)), {"layer4": "out"})
        model = DeepLabV3(backbone, DeepLabHead(512, num_classes), None)
    else:
        model = getattr(torchvision.models.segmentation, f"deeplabv3_resnet{depth}")(
            weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
    set_in_chans(model.backbone, in_chans)
    return model


def deeplab_units(model: nn.Module, in_chans: int, num_classes: int) -> UnitNet:
    """``model`` (a ``DeepLabV3`` without aux classifier, or a ``DeepLabV3Plus``) as
    units sharing its modules; sizes computed from the strides (no dry run)."""
    plus = isinstance(model, DeepLabV3Plus)
    # V3+: the stride-4 skip is layer1's output, read by the head from the bank
    units, info, reduction = trunk_units(model.backbone, {1: "low"} if plus else {})
    units.append(model.classifier)
    info.append(UnitInfo("classifier", num_classes, 4 if plus else reduction, kind="head",
                         reads=("low",) if plus else ()))
    return UnitNet(units, info, in_chans, num_classes, source=model, default_head="infopro",
                   default_head_opts=SEG_INFOPRO, task="segmentation")


def _register(name: str) -> None:
    def build(num_classes: int = 21, in_chans: int = 3) -> UnitNet:
        return deeplab_units(source_model(name, num_classes, in_chans), in_chans, num_classes)

    depth, plus = VARIANTS[name]
    build.__doc__ = (f"DeepLabV3{'+' if plus else ''} on ResNet-{depth} (random init) as "
                     f"units; weights export to ``source_model({name!r})``.")
    MODELS.add(name, build)


for _name in VARIANTS:
    _register(_name)
