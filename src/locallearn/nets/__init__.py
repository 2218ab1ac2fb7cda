"""Backbones as ordered units; one file per family, all in one registry."""
from .registry import MODELS, create_model, list_models
from .units import UnitInfo, UnitNet
from .adapters import register_adapter, to_unitnet
from . import cifar_resnet  # noqa: F401  (registers resnet20/32/56/110)
from . import torchvision_nets  # noqa: F401  (tv:resnet50, tv:vgg16_bn, tv:vit_b_16, ...)
from . import timm_vit  # noqa: F401  (timm:vit_*_patch16_224 when timm is installed)
from . import deeplab, deeplab_small  # noqa: F401  (deeplabv3[plus]_resnet18/50/101: segmentation)
from . import retinanet, yolo  # noqa: F401  (retinanet_resnet*, yolo_resnet*: detection)
from . import edsr  # noqa: F401  (edsr[_baseline|_tiny]_x2/3/4: super-resolution)

__all__ = ["MODELS", "UnitInfo", "UnitNet", "create_model", "list_models", "register_adapter",
           "to_unitnet"]
