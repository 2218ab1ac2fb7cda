"""The model registry: ``create_model(name, num_classes=..., in_chans=...)``."""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

from ..errors import ConfigTypeError
from ..registry import Registry
from .checks import as_int, as_size
from .units import UnitNet

MODELS: Registry[Callable[..., UnitNet]] = Registry("model")


def create_model(name: str, num_classes: int = 10, in_chans: int = 3,
                 image_size: Optional[Tuple[int, int]] = None) -> UnitNet:
    """Build a registered backbone as a ``UnitNet``.

    ``image_size`` matters only for models whose shapes depend on it (ViTs).
    Bad arguments raise ConfigError (a ValueError) / ConfigTypeError (a TypeError)
    naming the argument.
    """
    if not isinstance(name, str):
        raise ConfigTypeError(f"model name must be a string, got {name!r} "
                              f"(choose from: {', '.join(list_models())})")
    builder = MODELS.get(name)
    num_classes = as_int("num_classes", num_classes, 1)
    in_chans = as_int("in_chans", in_chans, 1)
    size = None if image_size is None else as_size("image_size", image_size)
    if size is not None and name.startswith(("tv:", "timm:")):
        return builder(num_classes=num_classes, in_chans=in_chans, image_size=size)
    return builder(num_classes=num_classes, in_chans=in_chans)


def list_models() -> List[str]:
    """Names accepted by ``create_model`` and ``--model``."""
    return MODELS.names()
