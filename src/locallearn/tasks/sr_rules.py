"""What super-resolution measures, without torchmetrics: the evaluation rules, the
8-bit quantisation, the shaved border and the luma (see sr_metrics for the metric)."""
from __future__ import annotations

import torch

from ..errors import ConfigError

RULES = ("y", "rgb")  # benchmark sets: luma, border = scale; DIV2K: RGB, border = scale + 6
#: BT.601 luma of RGB in [0, 1], scaled to [0, 1] (offset 16/255): MATLAB's rgb2ycbcr
Y_WEIGHTS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)
Y_OFFSET = 16.0 / 255.0


def to_y(x: torch.Tensor) -> torch.Tensor:
    """The luma of RGB images [B, 3, H, W] in [0, 1], as [B, 1, H, W] in [16/255, 235/255]."""
    if x.shape[1] != 3:
        return x  # already one channel (a grey model): nothing to convert
    w = torch.tensor(Y_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True) + Y_OFFSET


def quantize(x: torch.Tensor) -> torch.Tensor:
    """``x`` as an 8-bit image would hold it: clamped to [0, 1] and rounded to 1/255."""
    return x.clamp(0.0, 1.0).mul(255.0).round().div(255.0)


def border(rule: str, scale: int) -> int:
    """Pixels shaved off each side before measuring: ``scale`` (rule y), ``scale + 6`` (rgb)."""
    return scale if rule == "y" else scale + 6


def prepare(output: torch.Tensor, target: torch.Tensor, scale: int,
            rule: str) -> "tuple[torch.Tensor, torch.Tensor]":
    """The (prediction, target) pair that is measured: quantised, shaved, luma for rule y."""
    if output.shape != target.shape:
        raise ConfigError(f"the output is {tuple(output.shape)} but the high-resolution target "
                          f"{tuple(target.shape)}; they must have one size")
    b = border(rule, scale)
    h, w = target.shape[-2:]
    if h <= 2 * b or w <= 2 * b:
        raise ConfigError(f"a {h}x{w} image has nothing left after shaving a {b}-pixel border "
                          f"(x{scale}, rule {rule}); evaluate on larger images")
    # float64: SSIM's variances are differences of near-equal means, which float32 rounds
    # to about 1e-5 of the score
    pred, ref = quantize(output.double()), quantize(target.double())
    pred, ref = pred[..., b:h - b, b:w - b], ref[..., b:h - b, b:w - b]
    if rule == "y":
        pred, ref = to_y(pred), to_y(ref)
    return pred, ref
