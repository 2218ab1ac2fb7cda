"""The model registry: ``create_model(name, num_classes=..., in_chans=...)``."""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

from ..registry import Registry
from .units import UnitNet

MODELS: Registry[Callable[..., UnitNet]] = Registry("model")


def create_model(name: str, num_classes: int = 10, in_chans: int = 3,
                 image_size: Optional[Tuple[int, int]] = None) -> UnitNet:
    """Build a registered backbone as a ``UnitNet``.

    ``image_size`` matters only for models whose shapes depend on it (ViTs).
    """
    builder = MODELS.get(name)
    if image_size is not None and name.startswith(("tv:", "timm:")):
        return builder(num_classes=num_classes, in_chans=in_chans, image_size=tuple(image_size))
    return builder(num_classes=num_classes, in_chans=in_chans)


def list_models() -> List[str]:
    """Names accepted by ``create_model`` and ``--model``."""
    return MODELS.names()
