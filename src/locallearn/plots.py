"""Training curves as PNG (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

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
    save_figure(fig, path, title)


def plot_demo(curves: Dict[str, Sequence[Tuple[int, float]]],
              memory: Dict[str, Dict[str, float]], heads: Sequence[Optional[float]],
              reference: Tuple[str, float], path: Path, title: str = "",
              steps_per_epoch: Optional[int] = None, heads_label: str = "",
              kinds: Optional[Sequence[str]] = None) -> None:
    """The demo's picture, three panels: test accuracy (fractions, drawn in %) over
    training steps per run (label -> ``(step, acc)`` points); the memory of one training
    step as bars (label -> ``{"activation_mb", "total_mb"}``, the first label the
    baseline, each other bar marked with its saving against it); and the test accuracy
    of every block of the run ``heads_label`` (``heads``, the last being the network)
    against the baseline's final accuracy ``reference = (label, acc)`` as a horizontal
    line. ``kinds`` says per block where its accuracy comes from: ``"head"`` (the
    block's own predictor), ``"probe"`` (a linear probe on the block's output, for a
    head without class scores) or ``"network"`` (default: heads, the last the network)."""
    fig, (ax_acc, ax_mem, ax_heads) = plt.subplots(
        1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [1.25, 0.9, 1.1]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    # one colour per run, in the order the runs first appear
    color = {label: colors[i % len(colors)]
             for i, label in enumerate(dict.fromkeys([*curves, *memory]))}
    # (1) accuracy over steps: the same steps for every run, so the curves compare directly
    last_step = 0
    for label, points in curves.items():
        steps = [s for s, _ in points]
        ax_acc.plot(steps, [100 * a for _, a in points], marker="o", ms=4, label=label,
                    color=color[label])
        if points:
            last_step = max(last_step, steps[-1])
            ax_acc.annotate(f"{100 * points[-1][1]:.1f}%", (steps[-1], 100 * points[-1][1]),
                            textcoords="offset points", xytext=(4, 0), va="center",
                            fontsize=8, color=color[label])
    if steps_per_epoch:
        from matplotlib.transforms import blended_transform_factory

        at = blended_transform_factory(ax_acc.transData, ax_acc.transAxes)
        for e, s in enumerate(range(steps_per_epoch, last_step, steps_per_epoch), start=1):
            ax_acc.axvline(s, color="0.6", lw=0.8, ls=":")
            ax_acc.text(s, 0.5, f"end of epoch {e} ", transform=at, rotation=90, ha="right",
                        va="center", fontsize=8, color="0.4")
    ax_acc.set(xlabel="training step", ylabel="test accuracy (%)",
               title="test accuracy during training")
    ax_acc.set_xlim(0, last_step * 1.1 if last_step else None)
    # (2) memory of one training step: activations and the total, baseline first
    labels = list(memory)
    terms = (("activation_mb", "activations"), ("total_mb", "total"))
    width = 0.8 / max(1, len(labels))
    base = memory[labels[0]] if labels else {}
    for i, label in enumerate(labels):
        xs = [k + (i - (len(labels) - 1) / 2) * width for k in range(len(terms))]
        vals = [memory[label][key] for key, _ in terms]
        bars = ax_mem.bar(xs, vals, width, label=label, color=color[label])
        for bar, (key, _), v in zip(bars, terms, vals):
            text = f"{v:.0f} MB"
            if i > 0 and base.get(key):
                text += f"\n-{100 * (1 - v / base[key]):.0f}%"
            ax_mem.annotate(text, (bar.get_x() + bar.get_width() / 2, v),
                            textcoords="offset points", xytext=(0, 2), ha="center",
                            va="bottom", fontsize=8)
    ax_mem.set_xticks(range(len(terms)), [name for _, name in terms])
    top = max((memory[lb][k] for lb in labels for k, _ in terms), default=1.0)
    ax_mem.set_ylim(0, top * 1.25)
    ax_mem.set(ylabel="MB", title="memory of one training step")
    # (3) what each block knows on its own; the last one is the network
    xs = list(range(1, len(heads) + 1))
    if kinds is None:
        kinds = ["head"] * (len(heads) - 1) + ["network"]
    head_color = color.get(heads_label, colors[1])
    style = {"head": dict(color=head_color, label="block's own head"),
             "probe": dict(color="white", edgecolor=head_color, hatch="///",
                           label="linear probe on the block's output"),
             "network": dict(color="0.3", label="the network's own output")}
    for kind in ("head", "probe", "network"):
        sel = [i for i, k in enumerate(kinds) if k == kind]
        if not sel:
            continue
        ax_heads.bar([xs[i] for i in sel], [100 * (heads[i] or 0.0) for i in sel],
                     **style[kind])
    for x, a in zip(xs, heads):
        ax_heads.annotate("n/a" if a is None else f"{100 * a:.0f}", (x, 100 * (a or 0.0)),
                          textcoords="offset points", xytext=(0, 2), ha="center",
                          va="bottom", fontsize=8)
    ref_label, ref_acc = reference
    ax_heads.axhline(100 * ref_acc, color=color.get(ref_label, colors[0]), ls="--",
                     label=f"{ref_label} final ({100 * ref_acc:.1f}%)")
    ax_heads.set_xticks(xs, [str(x) for x in xs])
    ax_heads.set_ylim(0, 135)  # room above the bars for the legend
    ax_heads.set_yticks(range(0, 101, 20))
    ax_heads.set(xlabel="block", ylabel="test accuracy (%)",
                 title="what each block has learned on its own"
                       + (f"\n{heads_label}" if heads_label else ""))
    ax_acc.legend(fontsize=8, loc="lower right")
    ax_mem.legend(fontsize=8, loc="upper right")
    ax_heads.legend(fontsize=8, loc="upper left")
    for ax in (ax_acc, ax_mem, ax_heads):
        ax.grid(alpha=0.3, axis="both" if ax is ax_acc else "y")
    save_figure(fig, path, title)


def save_figure(fig: "plt.Figure", path: Path, title: str = "", dpi: int = 110) -> None:
    """Lay out ``fig`` (with ``title`` above), write it as a PNG and close it."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    from .checkpoint import atomic_write

    try:  # temp file + rename: a kill never leaves half a PNG
        atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    finally:
        plt.close(fig)
