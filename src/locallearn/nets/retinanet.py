"""RetinaNet (torchvision; Lin et al. 2017) on a ResNet-FPN, as units.

Units: the stem (conv1, bn1, relu, maxpool), every residual block of layer1..layer4
(the last block of layer2 writes ``"c3"``, of layer3 ``"c4"`` into the feature bank),
then the task unit: FPN (P3-P5 from C3-C5, P6/P7) + RetinaNet head. C5 is its input
``h``; C3/C4 come from the bank, so with blocks cut inside the trunk they arrive
detached and the detection loss trains only the last block, FPN and head (the MAN++
COCO code's K=4 split). The units share the modules of ``retinanet_source(...)``, so
``export_state_dict()`` loads strictly into a fresh one.

The loss, post-processing and metric are the "detection" task's (tasks/detection.py).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Tuple

import torch
import torchvision
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.image_list import ImageList
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

from ..errors import ConfigError, ConfigTypeError
from ..tasks.detection import RetinaNetOutput, retinanet_head
from .registry import MODELS
from .resnet_parts import DEPTHS, set_in_chans, trunk_units
from .units import UnitInfo, UnitNet


#: the bank names of the trunk features the FPN reads besides C5 (layer2, layer3 outputs)
BANK_NAMES: Dict[int, str] = {2: "c3", 3: "c4"}


def retinanet_source(depth: int, num_classes: int, in_chans: int = 3,
                     width: int = 256) -> RetinaNet:
    """A fresh (random-init, no download) torchvision RetinaNet on ResNet-``depth``.

    The layout of torchvision's ``retinanet_resnet50_fpn`` (v1) built untrained: FPN on
    layer2..4 (C3-C5) without norm, P6 from P5 (``LastLevelP6P7(256, 256)``; v2 takes
    C5), the default anchors (32-512, 3 scales x 3 ratios) and ``RetinaNetHead``
    without GroupNorm. The ResNet uses plain trainable ``nn.BatchNorm2d`` and nothing
    is frozen (``trainable_layers=5``): torchvision freezes BN only for pretrained
    backbones, and local blocks must be able to train every layer. For ``in_chans != 3``
    conv1 is replaced and the model's own transform normalises with the ImageNet
    mean/std averaged over RGB (it is used only when calling ``model(images)``).
    ``width`` is the FPN's and head's channels (torchvision: 256; narrower for small
    images on a CPU).
    """
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise ConfigTypeError(f"depth must be an int in {list(DEPTHS)}, got {depth!r}")
    if depth not in DEPTHS:
        raise ConfigError(f"unknown RetinaNet ResNet depth {depth} (choose from: "
                          f"{', '.join(map(str, DEPTHS))})")
    body = getattr(torchvision.models, f"resnet{depth}")(weights=None,
                                                         norm_layer=nn.BatchNorm2d)
    set_in_chans(body, in_chans)
    # what _resnet_fpn_extractor(body, 5, [2, 3, 4], LastLevelP6P7(256, 256)) builds, but
    # with the width given: C3-C5 are 128/256/512 (Basic) or 512/1024/2048 (Bottleneck)
    c3 = body.inplanes // 4
    backbone = BackboneWithFPN(body, {"layer2": "0", "layer3": "1", "layer4": "2"},
                               [c3, c3 * 2, c3 * 4], width,
                               extra_blocks=LastLevelP6P7(width, width))
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    if in_chans != 3:
        mean, std = [sum(mean) / 3] * in_chans, [sum(std) / 3] * in_chans
    return RetinaNet(backbone, num_classes, image_mean=mean, image_std=std)


class RetinaNetTaskUnit(nn.Module):
    """FPN + P6/P7 + RetinaNet head of ``model``, shared (no copies).

    Called ``unit(c5, c3, c4, image)``: ``image`` (the bank's network input) is read
    only for its size, which the anchor generator needs for its strides (torchvision
    computes them as image_size // grid_size, not from the nominal stride).
    """

    def __init__(self, model: RetinaNet) -> None:
        super().__init__()
        self.fpn = model.backbone.fpn
        self.head = model.head
        # No parameters or buffers, so no state_dict keys: sharing it changes no export.
        self.anchor_generator = model.anchor_generator

    def reset_parameters(self) -> None:
        """Torchvision's initialisation of FPN and head (an ``slm`` head's fresh copy):
        the head's class prior (bias -log(99)) keeps the focal loss sane at the start,
        which the layers' own ``reset_parameters`` would lose."""
        inner = [b[0].in_channels for b in self.fpn.inner_blocks]
        width = self.fpn.layer_blocks[0][0].out_channels
        fpn = FeaturePyramidNetwork(inner, width, extra_blocks=LastLevelP6P7(width, width))
        cls = self.head.classification_head
        head = retinanet_head(width, cls.num_anchors, cls.num_classes, len(cls.conv))
        dev = next(self.parameters()).device
        self.fpn.load_state_dict(fpn.state_dict())
        self.head.load_state_dict(head.state_dict())
        self.to(dev)

    def forward(self, c5: torch.Tensor, c3: torch.Tensor, c4: torch.Tensor,
                image: torch.Tensor) -> RetinaNetOutput:
        # the names BackboneWithFPN's IntermediateLayerGetter gives layer2..4
        pyramid = self.fpn(OrderedDict([("0", c3), ("1", c4), ("2", c5)]))
        features: List[torch.Tensor] = list(pyramid.values())
        out = RetinaNetOutput(self.head(features))
        size = (int(image.shape[-2]), int(image.shape[-1]))
        images = ImageList(image, [size] * image.shape[0])
        out.update(features=features, anchors=self.anchor_generator(images, features),
                   image_size=size)
        return out


def retinanet_units(model: RetinaNet, in_chans: int, num_classes: int) -> UnitNet:
    """``model`` (from ``retinanet_source``) as units sharing its modules; channels and
    reductions computed from the strides (no dry run, so it builds on the meta device)."""
    units, info, _ = trunk_units(model.backbone.body, BANK_NAMES)
    units.append(RetinaNetTaskUnit(model))
    # channels/reduction of the finest level's class scores (P3, stride 8)
    info.append(UnitInfo("retinanet_head", num_classes, 8, kind="head",
                         reads=("c3", "c4", "image")))
    # the reference's auxiliary RetinaNet heads are as wide as the main FPN / head
    return UnitNet(units, info, in_chans, num_classes, source=model, default_head="greedy",
                   default_head_opts={"width": model.backbone.out_channels}, task="detection")


#: registered name -> (ResNet depth, FPN / head width)
VARIANTS: Dict[str, Tuple[int, int]] = {
    **{f"retinanet_resnet{d}": (d, 256) for d in DEPTHS},
    # torchvision's layout at a quarter of the width: small images on a CPU
    "retinanet_resnet18_w64": (18, 64)}


def _register(name: str) -> None:
    depth, width = VARIANTS[name]

    def build(num_classes: int = 91, in_chans: int = 3) -> UnitNet:
        model = retinanet_source(depth, num_classes, in_chans, width)
        return retinanet_units(model, in_chans, num_classes)

    build.__doc__ = (f"RetinaNet on ResNet-{depth} with a {width}-channel FPN (random init) "
                     f"as units; weights export to ``retinanet_source({depth}, ..., "
                     f"width={width})``.")
    MODELS.add(name, build)


for _name in VARIANTS:
    _register(_name)
