"""Super-resolution results people look at: the bicubic baseline and side-by-side crops.

``bicubic_scores`` is the baseline row of every super-resolution table: the test set's
low-resolution images upscaled by bicubic interpolation (PIL's, the kernel MATLAB's
``imresize`` uses) and measured like a network's output. ``write_crops`` draws, for the
first few test images, the same window from the bicubic upscale, each run's output and
the high-resolution original, each titled with that image's PSNR: where the window is
the one bicubic gets most wrong, so the differences show.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

from .errors import ConfigError
from .local_net import LocalNet
from .tasks import Task
from .tasks.sr_metrics import psnr_ssim
from .tasks.sr_rules import prepare

CROP = 96  # side of a crop in high-resolution pixels (smaller images: their shorter side)


def _float(img: torch.Tensor) -> torch.Tensor:
    """uint8 [C, H, W] -> float [1, C, H, W] in [0, 1]."""
    return img.unsqueeze(0).float().div(255.0)


def bicubic_images(data: Any) -> List[torch.Tensor]:
    """Each test image's low-resolution version upscaled by bicubic interpolation, [1, C, H, W]."""
    return [_float(data.bicubic(lr)) for lr in data.test_lr]


def bicubic_scores(data: Any, task: Task) -> Dict[str, float]:
    """PSNR / SSIM of bicubic upscaling on ``data``'s test set, under ``task``'s rule."""
    metric = task.metric(3, torch.device("cpu"))
    for up, hr in zip(bicubic_images(data), data.test_hr):
        metric.update(up, _float(hr))
    return metric.compute()


@torch.no_grad()
def super_resolve(net: LocalNet, data: Any, device: torch.device) -> List[torch.Tensor]:
    """The network's output for each test image, [1, C, H, W] in [0, 1] on the CPU."""
    was = net.training
    net.eval()
    out = [net.predict(_float(lr).to(device)).cpu() for lr in data.test_lr]
    net.train(was)
    return out


def _window(up: torch.Tensor, hr: torch.Tensor, scale: int, rule: str) -> Tuple[int, int, int]:
    """(top, left, side) of the square crop where ``up`` is furthest from ``hr``."""
    h, w = hr.shape[-2:]
    side = min(CROP, h, w)
    pred, ref = prepare(up, hr, scale, rule)  # shaved like the metric: border errors don't count
    err = (pred - ref).pow(2).sum(1, keepdim=True)
    b = (h - pred.shape[-2]) // 2
    inner = min(side, err.shape[-2], err.shape[-1])
    score = F.avg_pool2d(err, inner, stride=max(1, inner // 4))
    i = int(score.flatten().argmax())
    cols = score.shape[-1]
    top, left = b + (i // cols) * max(1, inner // 4), b + (i % cols) * max(1, inner // 4)
    return min(top, h - side), min(left, w - side), side


def write_crops(path: Path, data: Any, runs: Sequence[Tuple[str, LocalNet]], device: torch.device,
                images: int = 3) -> Path:
    """A PNG: one row per test image (the first ``images``), columns bicubic / each run / HR."""
    if not runs:
        raise ConfigError("write_crops needs at least one run to show")
    task = runs[0][1].task
    rule = getattr(task, "rule", "y")
    n = min(images, len(data.test_hr))
    ups = bicubic_images(data)[:n]
    outs = [super_resolve(net, data, device)[:n] for _, net in runs]
    names = list(getattr(data, "test_names", [f"image {i}" for i in range(n)]))
    from .plots import plt, save_figure

    cols = ["bicubic", *[label for label, _ in runs], "HR"]
    fig, axes = plt.subplots(n, len(cols), figsize=(2.3 * len(cols), 2.5 * n), squeeze=False)
    for r in range(n):
        hr = _float(data.test_hr[r])
        top, left, side = _window(ups[r], hr, data.scale, rule)
        shown = [ups[r], *(o[r] for o in outs), hr]
        for c, (img, label) in enumerate(zip(shown, cols)):
            ax = axes[r][c]
            crop = img[0, :, top:top + side, left:left + side].clamp(0, 1)
            ax.imshow(crop.permute(1, 2, 0).squeeze(-1).numpy(), interpolation="nearest",
                      cmap="gray" if crop.shape[0] == 1 else None)
            title = label
            if label != "HR":
                psnr, _ = psnr_ssim(img, hr, data.scale, rule)
                title = f"{label}\n{float(psnr):.2f} dB"
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(f"{names[r]}\n({left},{top}) {side}px", fontsize=8)
    save_figure(fig, Path(path), f"x{data.scale} on {data.name}: crops where bicubic errs most "
                f"(PSNR of the whole image, {'Y channel' if rule == 'y' else 'RGB'})", dpi=120)
    return Path(path)
