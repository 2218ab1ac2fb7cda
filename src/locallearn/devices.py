"""Resolve the one ``device`` argument (auto | cpu | cuda | cuda:N)."""
from __future__ import annotations

import torch

from .errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")


def resolve_device(name: str) -> torch.device:
    """Turn a user's device string into a ``torch.device``, checking it exists."""
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but no CUDA device is available "
                              "(use --device cpu or auto)")
        dev = torch.device(text)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} does not exist: {torch.cuda.device_count()} "
                              "CUDA device(s) visible")
        return dev
    raise ConfigError(f"unknown device {name!r} (choose from: {', '.join(DEVICE_CHOICES)})")
