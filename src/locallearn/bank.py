"""FeatureBank: per-batch features that later units and auxiliary heads may read."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch


class FeatureBank:
    """The input image and named features written by units, made once per batch.

    A unit writes its output with ``write(name, h)``; a later unit or head reads it
    with ``read(name)`` (``"image"`` is the network input, always there). Inside one
    block a feature keeps its graph, so K=1 is exact backprop; ``seal()`` at a block
    boundary detaches everything written so far, so a later block or head never sends
    a gradient back across the boundary (for skips too).

    ``image01`` (the de-normalised image in [0, 1], the reconstruction target of
    InfoPro) is computed on first use and cached, so K-1 heads share one copy.
    """

    def __init__(self, image: torch.Tensor, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None) -> None:
        self.image = image.detach()
        self._mean = mean
        self._std = std
        self._image01: Optional[torch.Tensor] = None
        self._store: Dict[str, torch.Tensor] = {}
        self._open: List[str] = []  # written since the last seal: still attached

    @property
    def image01(self) -> torch.Tensor:
        """The input image mapped back to [0, 1] (clamped)."""
        if self._image01 is None:
            img = self.image
            if self._mean is not None and self._std is not None:
                shape = (1, -1, 1, 1)
                mean = torch.as_tensor(self._mean, dtype=img.dtype, device=img.device).view(shape)
                std = torch.as_tensor(self._std, dtype=img.dtype, device=img.device).view(shape)
                img = img * std + mean
            self._image01 = img.clamp(0.0, 1.0)
        return self._image01

    def write(self, name: str, value: torch.Tensor) -> None:
        """Store ``value`` (attached until the next ``seal``) under ``name``."""
        if name == "image":
            raise ValueError("'image' is the network input; a unit cannot overwrite it")
        self._store[name] = value
        self._open.append(name)

    def read(self, name: str) -> torch.Tensor:
        """The feature ``name``: attached if written in the current block, else detached."""
        if name == "image":
            return self.image
        try:
            return self._store[name]
        except KeyError:
            raise KeyError(f"the feature bank holds no {name!r} (it holds: image"
                           f"{''.join(', ' + n for n in self._store)})") from None

    def seal(self) -> None:
        """A block boundary: every feature written so far is detached from now on."""
        for name in self._open:
            self._store[name] = self._store[name].detach()
        self._open.clear()

    def names(self) -> List[str]:
        return ["image", *self._store]

    def put(self, name: str, value: torch.Tensor) -> None:
        """Store a feature already detached (e.g. one a head computes for later heads)."""
        self._store[name] = value.detach()

    def get(self, name: str) -> torch.Tensor:
        return self.read(name)

    def entries(self) -> Dict[str, torch.Tensor]:
        """The stored features (without the image), as they are now: what a pipeline
        stage sends on with its output, after ``seal`` (so detached)."""
        return dict(self._store)

    @classmethod
    def restore(cls, image: torch.Tensor, entries: Dict[str, torch.Tensor],
                mean: Optional[Sequence[float]] = None,
                std: Optional[Sequence[float]] = None) -> "FeatureBank":
        """A bank as another process left it at a block boundary (sealed)."""
        bank = cls(image, mean, std)
        for name, value in entries.items():
            bank.put(name, value)
        return bank
