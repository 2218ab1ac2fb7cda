"""Backbones as ordered units; one file per family, all in one registry."""
from .registry import MODELS, create_model, list_models
from .units import UnitInfo, UnitNet
from . import cifar_resnet  # noqa: F401  (registers resnet20/32/56/110)

__all__ = ["MODELS", "UnitInfo", "UnitNet", "create_model", "list_models"]
