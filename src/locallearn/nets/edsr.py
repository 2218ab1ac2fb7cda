"""EDSR (Lim et al. 2017) for super-resolution, as units, with its global skip through the bank.

Written here rather than taken from a package: the network is about sixty lines of plain
convolutions, and the packages that ship it (``basicsr``, ``super-image``, the authors'
``EDSR-PyTorch``) bring OpenCV, ``huggingface_hub`` or a training framework with them,
or are not packages at all; torchvision and timm have no super-resolution models. The
layout and initialisation follow the authors' code (``model/edsr.py`` and
``model/common.py``): PyTorch's default conv init, a fixed mean shift in and out,
residual blocks ``x + s * conv(relu(conv(x)))`` without batch norm, and a pixel-shuffle
upsampler (x2 and x4: one or two conv + shuffle(2); x3: conv + shuffle(3)).

Units (what local learning cuts into blocks):

- ``head``: mean shift, then a 3x3 conv from RGB to ``F`` features. It writes its output
  to the bank as ``shallow``: the low-resolution image's features, which EDSR adds back
  after the body (its global skip) and which every ``slm`` head fuses before upsampling.
- ``body.i``: the residual blocks.
- ``tail`` (the task unit): the body's closing 3x3 conv, plus ``shallow`` read from the
  bank (attached inside one block, so K=1 is EDSR's backprop exactly), then the
  super-resolution task's predictor: upsampler, a 3x3 conv to RGB and the mean shift back
  (the very module a ``greedy`` head ends in).

Sizes: ``edsr`` is the paper's large EDSR (32 blocks, 256 features, residual scale 0.1),
``edsr_baseline`` its baseline (16 blocks, 64 features, no residual scaling), and
``edsr_tiny`` a CPU-sized one (8 blocks, 32 features) for tests and the 2-core benchmark.
Each is registered for x2, x3 and x4 (``edsr_baseline_x2``, ...): a model upsamples by
the one factor it was built for.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import nn

from .registry import MODELS
from .units import UnitInfo, UnitNet

#: DIV2K's mean RGB (the authors' ``rgb_mean``), subtracted on the way in, added back out
DIV2K_MEAN: Tuple[float, float, float] = (0.4488, 0.4371, 0.4040)
SCALES: Tuple[int, ...] = (2, 3, 4)
#: name -> (residual blocks, features, residual scale)
SIZES: Dict[str, Tuple[int, int, float]] = {
    "edsr": (32, 256, 0.1), "edsr_baseline": (16, 64, 1.0), "edsr_tiny": (8, 32, 1.0)}
#: the slm heads keep two residual blocks (the paper's local module is "a few"); one
#: gives a head too shallow to use the fused image well, more costs memory per head
SLM_RECIPE: Dict[str, object] = {"per_stage": 2}


class MeanShift(nn.Module):
    """Adds ``sign * mean`` per channel (a fixed buffer: no parameters to train)."""

    def __init__(self, mean: Tuple[float, ...], sign: float) -> None:
        super().__init__()
        self.register_buffer("shift", sign * torch.tensor(mean).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift.to(x.dtype)


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class Upsampler(nn.Sequential):
    """Pixel shuffle by ``scale``: log2(scale) x (conv to 4F, shuffle 2), or conv to 9F + shuffle 3."""

    def __init__(self, scale: int, features: int) -> None:
        layers = []
        if scale & (scale - 1) == 0:  # a power of two
            for _ in range(scale.bit_length() - 1):
                layers += [conv3x3(features, 4 * features), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [conv3x3(features, 9 * features), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"the EDSR upsampler takes scale 2^n or 3, not {scale}")
        super().__init__(*layers)


class SRPredictor(nn.Sequential):
    """Features at low resolution -> the RGB image ``scale`` x larger: upsampler, 3x3 conv to
    ``out_chans``, mean shift back. EDSR's tail, and what a greedy SR head ends in."""

    def __init__(self, features: int, scale: int, out_chans: int = 3,
                 mean: Tuple[float, ...] = DIV2K_MEAN) -> None:
        super().__init__(Upsampler(scale, features), conv3x3(features, out_chans),
                         MeanShift(mean[:out_chans] if out_chans == len(mean) else
                                   (0.0,) * out_chans, +1.0))


class Head(nn.Sequential):
    """Mean shift, then a 3x3 conv to features (EDSR's ``head``)."""

    def __init__(self, in_chans: int, features: int) -> None:
        mean = DIV2K_MEAN if in_chans == 3 else (0.0,) * in_chans
        super().__init__(MeanShift(mean, -1.0), conv3x3(in_chans, features))


class ResBlock(nn.Module):
    """``x + res_scale * conv(relu(conv(x)))``: EDSR's residual block (no batch norm)."""

    def __init__(self, features: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(conv3x3(features, features), nn.ReLU(inplace=True),
                                  conv3x3(features, features))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class Tail(nn.Module):
    """The body's last conv, the global skip (``shallow`` from the bank) and the predictor."""

    def __init__(self, features: int, predictor: nn.Module) -> None:
        super().__init__()
        self.conv = conv3x3(features, features)
        self.predictor = predictor

    def forward(self, h: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.conv(h) + shallow)


class EDSR(UnitNet):
    """EDSR as units (see the module docstring); ``num_classes`` is the output channels."""

    default_head = "slm"
    head_recipes = {"slm": SLM_RECIPE}
    task = "super_resolution"

    def __init__(self, scale: int, blocks: int, features: int, res_scale: float,
                 num_classes: int = 3, in_chans: int = 3) -> None:
        units = [Head(in_chans, features)]
        info = [UnitInfo("head", features, 1, writes="shallow")]
        for i in range(blocks):
            units.append(ResBlock(features, res_scale))
            info.append(UnitInfo(f"body.{i}", features, 1))
        units.append(Tail(features, SRPredictor(features, scale, num_classes)))
        info.append(UnitInfo("tail", num_classes, 1, kind="head", reads=("shallow",)))
        super().__init__(units, info, in_chans, num_classes, input_size=(in_chans, 48, 48))
        self.scale = scale


def _register(name: str, scale: int) -> None:
    blocks, features, res_scale = SIZES[name]

    def build(num_classes: int = 3, in_chans: int = 3) -> EDSR:
        return EDSR(scale, blocks, features, res_scale, num_classes=num_classes,
                    in_chans=in_chans)

    build.__doc__ = (f"EDSR x{scale}: {blocks} residual blocks, {features} features, "
                     f"residual scale {res_scale:g}.")
    MODELS.add(f"{name}_x{scale}", build)


for _name in SIZES:
    for _s in SCALES:
        _register(_name, _s)
