"""PSNR and SSIM per image, as the EDSR code measures super-resolution.

EDSR's ``utility.calc_psnr``: the output is quantised to 8 bits (clamped to [0, 1],
rounded to 1/255), a border of the image is shaved, and on the benchmark sets (Set5,
Set14, B100, Urban100) only the luma is compared: ``Y = (16 + 65.481 R + 128.553 G +
24.966 B) / 255`` for RGB in [0, 1] (ITU-R BT.601, MATLAB's ``rgb2ycbcr``) with a border
of ``scale`` pixels; on DIV2K all three RGB channels with a border of ``scale + 6``.
PSNR is computed per image and averaged over images (not over pixels of the whole set),
and SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5) likewise, on the same shaved
Y or RGB images. Both come from torchmetrics' functional forms with ``data_range=1``.

Identical images give PSNR = inf, as in EDSR's code and torchmetrics; that propagates to
the mean, which is the honest answer for a perfect reconstruction.
"""
from __future__ import annotations

from typing import Dict

import torch
from torchmetrics import Metric
from torchmetrics.functional.image import (peak_signal_noise_ratio,
                                           structural_similarity_index_measure)

from ..errors import check_choice
from .sr_rules import RULES, prepare


def psnr_ssim(output: torch.Tensor, target: torch.Tensor, scale: int,
              rule: str = "y") -> "tuple[torch.Tensor, torch.Tensor]":
    """Per-image PSNR (dB) and SSIM of ``output`` against ``target`` (both [B, C, H, W] in
    [0, 1]) under ``rule``; each a [B] tensor."""
    check_choice("super-resolution evaluation rule", rule, RULES)
    pred, ref = prepare(output, target, scale, rule)
    psnr = peak_signal_noise_ratio(pred, ref, data_range=1.0, reduction="none", dim=(1, 2, 3))
    side = min(pred.shape[-2:])
    kernel = min(11, side - (1 - side % 2))  # an odd window that fits a small image
    ssim = structural_similarity_index_measure(pred, ref, data_range=1.0, reduction="none",
                                               kernel_size=kernel)
    return psnr.reshape(-1).float(), ssim.reshape(-1).float()


class SRMetric(Metric):
    """Mean per-image PSNR and SSIM over a set (sums and a count: they sync across ranks)."""

    full_state_update = False

    def __init__(self, scale: int, rule: str = "y", **kwargs: object) -> None:
        super().__init__(**kwargs)
        check_choice("super-resolution evaluation rule", rule, RULES)
        self.scale, self.rule = int(scale), rule
        for name in ("psnr_sum", "ssim_sum", "count"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64),
                           dist_reduce_fx="sum")

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        psnr, ssim = psnr_ssim(output, target, self.scale, self.rule)
        self.psnr_sum += psnr.double().sum()
        self.ssim_sum += ssim.double().sum()
        self.count += psnr.numel()

    def compute(self) -> Dict[str, float]:  # type: ignore[override]
        n = max(float(self.count), 1.0)
        return {"psnr": float(self.psnr_sum) / n, "ssim": float(self.ssim_sum) / n}
