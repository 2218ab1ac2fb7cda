"""torchvision ResNet / ResNeXt / Wide-ResNet, VGG and ViT as units (sharing their modules)."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet, VGG, VisionTransformer

from ..errors import ConfigError
from .adapters import register_adapter, to_unitnet
from .pool import GlobalAvgPool
from .registry import MODELS
from .units import UnitNet


def _resnet(m: ResNet) -> Tuple[List[nn.Module], List[str], str]:
    units: List[nn.Module] = [nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)]
    names = ["stem"]
    for li in range(1, 5):
        for bi, block in enumerate(getattr(m, f"layer{li}")):
            units.append(block)
            names.append(f"layer{li}.{bi}")
    # torchvision's AdaptiveAvgPool2d((1, 1)) hands channels_last maps an NCHW gradient
    pool = GlobalAvgPool() if m.avgpool.output_size in (1, (1, 1)) else m.avgpool
    units.append(nn.Sequential(pool, nn.Flatten(1), m.fc))
    names.append("fc")
    return units, names, "infopro"


def _vgg(m: VGG) -> Tuple[List[nn.Module], List[str], str]:
    """One unit per conv (+BN) + ReLU, with a following max-pool folded in."""
    groups: List[List[nn.Module]] = []
    for layer in m.features:
        if isinstance(layer, nn.Conv2d) or not groups:
            groups.append([layer])
        else:
            groups[-1].append(layer)
    units: List[nn.Module] = [nn.Sequential(*g) for g in groups]
    names = [f"features.{i}" for i in range(len(groups))]
    units.append(nn.Sequential(m.avgpool, nn.Flatten(1), m.classifier))
    return units, names + ["classifier"], "infopro"


class TvVitStem(nn.Module):
    """Patchify, prepend the class token, add position embeddings (torchvision ViT)."""

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token
        self.pos_embedding = vit.encoder.pos_embedding
        self.dropout = vit.encoder.dropout
        object.__setattr__(self, "vit", vit)  # for its _process_input, not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.vit._process_input(x)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.dropout(x + self.pos_embedding)


class TvVitHead(nn.Module):
    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.ln = vit.encoder.ln
        self.heads = vit.heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.ln(x)[:, 0])


def _tv_vit(m: VisionTransformer) -> Tuple[List[nn.Module], List[str], str]:
    layers = list(m.encoder.layers)
    return ([TvVitStem(m), *layers, TvVitHead(m)],
            ["stem", *[f"encoder.layers.{i}" for i in range(len(layers))], "head"], "vit")


register_adapter("torchvision ResNet/ResNeXt/Wide-ResNet", lambda m: isinstance(m, ResNet), _resnet)
register_adapter("torchvision VGG", lambda m: isinstance(m, VGG), _vgg)
register_adapter("torchvision ViT", lambda m: isinstance(m, VisionTransformer), _tv_vit)

CNNS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
        "resnext101_32x8d", "wide_resnet50_2", "vgg11", "vgg13", "vgg16", "vgg19",
        "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]


def _register(name: str) -> None:
    def build(num_classes: int = 1000, in_chans: int = 3,
              image_size: Optional[Tuple[int, int]] = None) -> UnitNet:
        size = tuple(image_size) if image_size else (224, 224)
        if name.startswith("vit") and (size[0] != size[1] or size[0] % 16):
            # torchvision's ViT takes one side and asserts it divides into 16x16 patches
            raise ConfigError(f"image_size {size} for tv:{name} must be square and a multiple "
                              "of its patch size 16, e.g. (224, 224) or (32, 32)")
        if name.startswith("vit"):
            m = getattr(torchvision.models, name)(weights=None, num_classes=num_classes,
                                                  image_size=size[0])
        else:
            m = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        if in_chans != 3:  # e.g. grayscale: a new first layer, same shape otherwise
            _set_in_chans(m, in_chans)
        return to_unitnet(m, size, in_chans, num_classes)

    build.__doc__ = f"torchvision {name} (random init) as units."
    MODELS.add(f"tv:{name}", build)


def _set_in_chans(m: nn.Module, in_chans: int) -> None:
    for parent in m.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(parent, child_name, nn.Conv2d(
                    in_chans, child.out_channels, child.kernel_size, child.stride, child.padding,
                    bias=child.bias is not None))
                return


for _name in CNNS + ["vit_b_16"]:
    _register(_name)
