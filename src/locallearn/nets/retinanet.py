"""RetinaNet (torchvision; Lin et al. 2017) on a ResNet-FPN, as units.

Units: the stem (conv1, bn1, relu, maxpool), every residual block of layer1..layer4
(the last block of layer2 writes ``"c3"``, of layer3 ``"c4"`` into the feature bank),
then the task unit: FPN (P3-P5 from C3-C5, P6/P7) + RetinaNet head. C5 is its input
``h``; C3/C4 come from the bank, so with blocks cut inside the trunk they arrive
detached and the detection loss trains only the last block, FPN and head (the MAN++
COCO code's K=4 split). The units share the modules of ``retinanet_source(...)``, so
``export_state_dict()`` loads strictly into a fresh one.

Not registered in MODELS and no "detection" task yet: that, the loss (anchor
matching + ``RetinaNetHead.compute_loss``) and post-processing come later.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Tuple

import torch
import torchvision
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.image_list import ImageList
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from ..errors import ConfigError, ConfigTypeError
from .resnet_parts import set_in_chans, trunk_units
from .units import UnitInfo, UnitNet

#: ResNet depths torchvision builds (18/34: BasicBlock, 50/101/152: Bottleneck)
DEPTHS: Tuple[int, ...] = (18, 34, 50, 101, 152)

#: the bank names of the trunk features the FPN reads besides C5 (layer2, layer3 outputs)
BANK_NAMES: Dict[int, str] = {2: "c3", 3: "c4"}


def retinanet_source(depth: int, num_classes: int, in_chans: int = 3) -> RetinaNet:
    """A fresh (random-init, no download) torchvision RetinaNet on ResNet-``depth``.

    The layout of torchvision's ``retinanet_resnet50_fpn`` (v1) built untrained: FPN on
    layer2..4 (C3-C5) without norm, P6 from P5 (``LastLevelP6P7(256, 256)``; v2 takes
    C5), the default anchors (32-512, 3 scales x 3 ratios) and ``RetinaNetHead``
    without GroupNorm. The ResNet uses plain trainable ``nn.BatchNorm2d`` and nothing
    is frozen (``trainable_layers=5``): torchvision freezes BN only for pretrained
    backbones, and local blocks must be able to train every layer. For ``in_chans != 3``
    conv1 is replaced and the model's own transform normalises with the ImageNet
    mean/std averaged over RGB (it is used only when calling ``model(images)``).
    """
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise ConfigTypeError(f"depth must be an int in {list(DEPTHS)}, got {depth!r}")
    if depth not in DEPTHS:
        raise ConfigError(f"unknown RetinaNet ResNet depth {depth} (choose from: "
                          f"{', '.join(map(str, DEPTHS))})")
    body = getattr(torchvision.models, f"resnet{depth}")(weights=None,
                                                         norm_layer=nn.BatchNorm2d)
    set_in_chans(body, in_chans)
    # in_channels_list comes from body.inplanes: 128/256/512 (Basic), 512/1024/2048 (Bottleneck)
    backbone = _resnet_fpn_extractor(body, trainable_layers=5, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(256, 256))
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    if in_chans != 3:
        mean, std = [sum(mean) / 3] * in_chans, [sum(std) / 3] * in_chans
    return RetinaNet(backbone, num_classes, image_mean=mean, image_std=std)


def _detach(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (list, tuple)):
        return type(value)(_detach(v) for v in value)
    return value


class RetinaNetOutput(dict):
    """What the task unit returns: torchvision's ``head_outputs`` plus what the loss
    and post-processing need, so the task gets all of it through ``loss(output, y)``.

    Keys: ``cls_logits`` [B, sum(HWA), C] and ``bbox_regression`` [B, sum(HWA), 4]
    (anchor-major, levels P3..P7 concatenated, as ``RetinaNetHead`` returns them),
    ``features`` (the five FPN maps P3..P7), ``anchors`` (B tensors [sum(HWA), 4], xyxy
    pixels, from the model's own ``AnchorGenerator``), ``image_size`` (H, W) of the
    (batched) input. A dict subclass only for ``detach()``: ``LocalNet._walk`` detaches
    every block's output, the last one included.
    """

    def detach(self) -> "RetinaNetOutput":
        return RetinaNetOutput({k: _detach(v) for k, v in self.items()})


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
    return UnitNet(units, info, in_chans, num_classes, source=model, default_head="greedy",
                   task="detection")
