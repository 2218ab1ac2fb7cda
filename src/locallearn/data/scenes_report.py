"""fmnist-scenes at a glance: statistics of a scene set and a PNG grid of scenes beside
their masks. ``python -m locallearn.data.scenes_report --n 1000 --png grid.png``."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch

from ..checkpoint import atomic_write
from .scenes import Scenes, fmnist_scenes


def scene_stats(sc: Scenes) -> Dict[str, Any]:
    """Objects per scene, box sizes and the foreground share of a scene set."""
    k = torch.tensor([len(b) for b in sc.boxes], dtype=torch.float64)
    allb = torch.cat(sc.boxes) if len(sc.boxes) else torch.zeros(0, 4)
    w, h = allb[:, 2] - allb[:, 0], allb[:, 3] - allb[:, 1]
    fg = (sc.masks > 0).double().mean(dim=(1, 2))
    lab = torch.cat(sc.labels) if len(sc.labels) else torch.zeros(0, dtype=torch.int64)
    counts = torch.bincount(k.long(), minlength=1).tolist()
    return {"scenes": len(sc), "objects": int(k.sum()), "objects_per_scene": float(k.mean()),
            "scenes_by_objects": {i: c for i, c in enumerate(counts) if c}, "box_w": float(w.mean()),
            "box_h": float(h.mean()), "box_side_min": float(torch.minimum(w, h).min()) if len(w) else 0.0,
            "box_side_max": float(torch.maximum(w, h).max()) if len(w) else 0.0,
            "foreground": float(fg.mean()), "foreground_min": float(fg.min()), "foreground_max": float(fg.max()),
            "class_counts": torch.bincount(lab, minlength=sc.num_classes).tolist()}


def save_grid(sc: Scenes, path: str, count: int = 8) -> None:
    """A PNG of ``count`` scenes (with boxes) beside their masks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch, Rectangle

    colours = ["#000000"] + list(plt.get_cmap("tab10").colors)
    cmap = ListedColormap(colours)
    count = min(count, len(sc))
    cols = 4  # two (scene, mask) pairs per row
    rows = math.ceil(count / 2)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 2.6 + 0.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(count):
        a_img, a_mask = axes[i // 2, 2 * (i % 2)], axes[i // 2, 2 * (i % 2) + 1]
        a_img.imshow(sc.images[i, 0].numpy(), cmap="gray", vmin=0, vmax=255)
        for b, lab in zip(sc.boxes[i].tolist(), sc.labels[i].tolist()):
            a_img.add_patch(Rectangle((b[0] - 0.5, b[1] - 0.5), b[2] - b[0], b[3] - b[1], fill=False,
                                      edgecolor=colours[lab + 1], linewidth=1.2))
        a_img.set_title(f"scene {i}", fontsize=8)
        a_mask.imshow(sc.masks[i].numpy(), cmap=cmap, vmin=0, vmax=len(colours) - 1, interpolation="nearest")
        a_mask.set_title("mask", fontsize=8)
    handles = [Patch(color=colours[c + 1], label=f"{c + 1}: {sc.class_names[c]}") for c in range(sc.num_classes)]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    try:  # temp file + rename, like every file the library writes
        atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    finally:
        plt.close(fig)


def _main(argv: Optional[Sequence[str]] = None) -> None:
    import argparse
    import json
    import time

    ap = argparse.ArgumentParser(prog="python -m locallearn.data.scenes_report", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="train scenes to generate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--png", default=None, help="write a grid of 8 scenes and masks here")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    train, _ = fmnist_scenes(args.data_dir, n_train=args.n, n_test=1, seed=args.seed)
    print(f"{args.n} train scenes in {time.perf_counter() - t:.2f} s")
    print(json.dumps(scene_stats(train), indent=1))
    if args.png:
        save_grid(train, args.png)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    _main()
