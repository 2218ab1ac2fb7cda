"""Training curves as PNG (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def plot_runs(runs: Dict[str, Sequence[Dict[str, float]]], path: Path, title: str = "") -> None:
    """Plot train loss and test accuracy per epoch for one or more runs (label -> rows)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for label, rows in runs.items():
        epochs: List[float] = [r["epoch"] for r in rows]
        ax_loss.plot(epochs, [r["train_loss"] for r in rows], marker="o", label=label)
        ax_acc.plot(epochs, [100.0 * r["test_acc"] for r in rows], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="train loss (last block)", title="training loss")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy")
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
