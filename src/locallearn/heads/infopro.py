"""InfoPro head (Wang et al. 2021): image reconstruction + classification/contrast."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..bank import FeatureBank
from ..errors import ConfigError, check_choice
from ..nets.pool import GlobalAvgPool
from .base import HEADS, AuxHead, HeadContext, interpolate
from .losses import SUPCON_MEANS, supcon_loss

LOSSES = ("ce", "supcon")
CLASSIFIERS = ("1c2f", "2c2f")
INTERPS = ("block", "stage")
DECODER_ORDERS = ("resize_first", "conv_first")


def _pair(name: str, value: Union[float, Sequence[float]]) -> Tuple[float, float]:
    """A (start, end) weight pair; a single number means a constant weight."""
    if isinstance(value, (int, float)):
        return float(value), float(value)
    try:
        start, end = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"infopro option {name} must be a number or (start, end), "
                          f"got {value!r}") from None
    return start, end


class Decoder(nn.Module):
    """Upsample to the input size, conv-BN-ReLU-conv to image channels.

    ``order="resize_first"`` is InfoPro's CIFAR decoder. ``"conv_first"`` runs the first
    conv-BN-ReLU at the features' resolution and upsamples its 12 channels instead of
    the C input channels: the same layers, far cheaper for wide, low-resolution
    features (ImageNet ResNets: 1024 channels at 14x14 -> 224x224).
    ``forward`` returns the pre-sigmoid logits; the reconstruction is their sigmoid.
    """

    def __init__(self, ctx: HeadContext, widen: float = 1.0, order: str = "resize_first") -> None:
        super().__init__()
        hidden = int(12 * widen)
        self.image_size = tuple(ctx.image_size)
        self.order = order
        self.first = nn.Sequential(nn.Conv2d(ctx.info.channels, hidden, 3, padding=1),
                                   nn.BatchNorm2d(hidden), nn.ReLU(inplace=True))
        self.last = nn.Conv2d(hidden, ctx.image_channels, 3, padding=1)

    def _resize(self, x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == size:  # same size: skip a saved copy
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)

    def forward(self, features: torch.Tensor,
                size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """Reconstruction logits at ``size`` (default: the ``image_size`` built for)."""
        size = self.image_size if size is None else tuple(size)
        if self.order == "conv_first":
            return self.last(self._resize(self.first(features), size))
        return self.last(self.first(self._resize(features, size)))

    def loss(self, features: torch.Tensor, image01: torch.Tensor) -> torch.Tensor:
        # BCE on logits == BCE(sigmoid(.)) but autocast-safe; float32 for accuracy.
        # At the batch's own size: images of another size than image_size still train.
        recon = self(features, tuple(image01.shape[-2:]))
        return F.binary_cross_entropy_with_logits(recon.float(), image01.float())


class Classifier(nn.Module):
    """``1c2f`` / ``2c2f`` auxiliary classifier; CE logits or SupCon embeddings.

    The first conv halves the map and doubles the channels while the map is
    larger than 8x8 (InfoPro's 16->32 s2, 32->64 s2, 64->64 s1 on CIFAR).
    """

    def __init__(self, ctx: HeadContext, config: str = "1c2f", loss: str = "supcon",
                 widen: float = 1.0, feature_dim: int = 128, temperature: float = 0.07,
                 max_width: int = 0, supcon_mean: str = "positives") -> None:
        super().__init__()
        c = ctx.info.channels
        self.loss_mode = loss
        self.temperature = temperature
        self.supcon_mean = supcon_mean
        self.stride = 2 if max(ctx.feature_size) > 8 else 1
        width = int((2 * c if self.stride == 2 else c) * widen)
        if max_width > 0:  # wide ImageNet features: 1024 -> 2048 3x3 would be 19M weights
            width = min(width, max_width)
        layers: List[nn.Module] = [nn.Conv2d(c, width, 3, stride=self.stride, padding=1, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        if config == "2c2f":
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        hidden = int(feature_dim * widen)
        out = ctx.num_classes if loss == "ce" else feature_dim
        layers += [GlobalAvgPool(), nn.Flatten(),
                   nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out)]
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """CE logits, or the (unnormalised) contrastive embedding."""
        return self.net(features)

    def loss(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = self(features)
        if self.loss_mode == "ce":
            return F.cross_entropy(out, target)
        return supcon_loss(F.normalize(out.float(), dim=1), target, self.temperature,
                           self.supcon_mean)


@HEADS.register("infopro")
class InfoProHead(AuxHead):
    """``ixx * BCE(reconstruction, image01) + ixy * classifier loss``.

    ``ixx`` / ``ixy`` are (start, end) pairs interpolated over the heads by
    ``interp`` ("block" or "stage", see ``base.interpolate``; ``interp_over``: its
    denominator, 0 = heads - 1); the resolved
    weights of this head are ``self.ixx`` / ``self.ixy``.

    ``supcon_mean``: how SupCon averages over anchors (``losses.supcon_loss``):
    "positives" (anchors with a positive) or "all" (the reference code).

    For a task other than classification the classifier is the task's own predictor and
    loss (``loss``, ``classifier``, ``feature_dim``, ``temperature`` and ``max_width``
    then have no effect): reconstruction decoder + task predictor.
    """

    def __init__(self, ctx: HeadContext, ixx: Tuple[float, float] = (5.0, 0.2),
                 ixy: Tuple[float, float] = (0.05, 0.5), interp: str = "block",
                 loss: str = "supcon", classifier: str = "1c2f", widen: float = 1.0,
                 feature_dim: int = 128, temperature: float = 0.07,
                 decoder: str = "resize_first", max_width: int = 0,
                 supcon_mean: str = "positives", interp_over: int = 0) -> None:
        super().__init__()
        check_choice("infopro supcon_mean", supcon_mean, SUPCON_MEANS)
        check_choice("infopro decoder", decoder, DECODER_ORDERS)
        check_choice("infopro loss", loss, LOSSES)
        check_choice("infopro classifier", classifier, CLASSIFIERS)
        check_choice("infopro interp", interp, INTERPS)
        if widen <= 0 or feature_dim < 1 or temperature <= 0:
            raise ConfigError(f"infopro: widen, feature_dim and temperature must be positive, "
                              f"got {widen}, {feature_dim}, {temperature}")
        if interp_over < 0:
            raise ConfigError(f"infopro interp_over must be >= 0 (0: heads - 1), got {interp_over}")
        self.ixx = interpolate(*_pair("ixx", ixx), ctx, by=interp, over=interp_over)
        self.ixy = interpolate(*_pair("ixy", ixy), ctx, by=interp, over=interp_over)
        self.decoder = Decoder(ctx, widen, decoder)
        self.task = ctx.task
        if ctx.task.name == "classification":
            self.classifier: nn.Module = Classifier(ctx, classifier, loss, widen, feature_dim,
                                                    temperature, max_width, supcon_mean)
            self._scores = loss == "ce"
        else:
            self.classifier = ctx.task.predictor(ctx.info.channels, ctx.num_classes,
                                                 ctx.info.reduction)
            self._scores = True

    def forward(self, features: torch.Tensor, target: torch.Tensor,
                bank: FeatureBank) -> torch.Tensor:
        recon = self.decoder.loss(features, bank.image01)
        if isinstance(self.classifier, Classifier):
            task_loss = self.classifier.loss(features, target)
        else:
            task_loss = self.task.loss(self.classifier(features), target)
        return self.ixx * recon + self.ixy * task_loss

    def logits(self, features: torch.Tensor) -> Optional[torch.Tensor]:
        """The predictor's scores (None for a SupCon classifier: it has no classes)."""
        return self.classifier(features) if self._scores else None
