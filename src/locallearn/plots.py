"""Training curves as PNG (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


#: how a metric column is called on a plot's axis
LABELS = {"test_acc": "test accuracy", "test_miou": "test mIoU", "test_mean_acc": "test mean accuracy",
          "test_pixel_acc": "test pixel accuracy", "test_psnr": "test PSNR", "test_ssim": "test SSIM"}
#: metrics drawn as they are (not fractions shown in %), with their unit
RAW_UNITS = {"test_psnr": "dB", "test_ssim": ""}


def plot_runs(runs: Dict[str, Sequence[Dict[str, float]]], path: Path, title: str = "",
              metric: str = "test_acc") -> None:
    """Plot train loss and the test metric ``metric`` (a fraction, drawn in %; PSNR in dB)
    per epoch for one or more runs (label -> rows)."""
    factor, unit = (1.0, RAW_UNITS[metric]) if metric in RAW_UNITS else (100.0, "%")
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for label, rows in runs.items():
        epochs: List[float] = [r["epoch"] for r in rows]
        ax_loss.plot(epochs, [r["train_loss"] for r in rows], marker="o", label=label)
        ax_acc.plot(epochs, [factor * r[metric] for r in rows], marker="o", label=label)
    name = LABELS.get(metric, metric)
    ax_loss.set(xlabel="epoch", ylabel="train loss (last block)", title="training loss")
    ax_acc.set(xlabel="epoch", ylabel=f"{name} ({unit})" if unit else name, title=name)
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    from .checkpoint import atomic_write

    try:  # temp file + rename: a kill never leaves half a PNG
        atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
