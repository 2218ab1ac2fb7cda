"""The model registry: ``create_model(name, num_classes=..., in_chans=...)``."""
from __future__ import annotations

from typing import Callable, List

from ..registry import Registry
from .units import UnitNet

MODELS: Registry[Callable[..., UnitNet]] = Registry("model")


def create_model(name: str, num_classes: int = 10, in_chans: int = 3) -> UnitNet:
    """Build a registered backbone as a ``UnitNet``."""
    return MODELS.get(name)(num_classes=num_classes, in_chans=in_chans)


def list_models() -> List[str]:
    """Names accepted by ``create_model`` and ``--model``."""
    return MODELS.names()
