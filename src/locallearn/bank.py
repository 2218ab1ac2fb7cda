"""FeatureBank: detached per-batch features that auxiliary heads may read."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch


class FeatureBank:
    """Holds the normalised input image and derived views, made once per batch.

    ``image01`` (the de-normalised image in [0, 1], the reconstruction target of
    InfoPro) is computed on first use and cached, so K-1 heads share one copy.
    Other detached features can be stored with ``put`` / read with ``get``.
    """

    def __init__(self, image: torch.Tensor, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None) -> None:
        self.image = image.detach()
        self._mean = mean
        self._std = std
        self._image01: Optional[torch.Tensor] = None
        self._store: Dict[str, torch.Tensor] = {}

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

    def put(self, name: str, value: torch.Tensor) -> None:
        self._store[name] = value.detach()

    def get(self, name: str) -> torch.Tensor:
        return self._store[name]
