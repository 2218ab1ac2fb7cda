"""`locallearn analyze`: probes, CKA and Grad-CAM of one run, as JSON and PNG files."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from ..checkpoint import atomic_write, atomic_write_text
from ..errors import ConfigError
from ..evaluate import head_report
from ..local_net import LocalNet
from ..run_dir import check_new_file, check_writable_dir
from .features import (PROBE_TASKS, block_ends, limited, matching_units, probe_features,
                       unit_cka)
from .gradcam import SKIPPED, localnet_gradcam
from .probe import train_probe

#: the files an analysis writes; in the run's own directory they replace an earlier analysis
FILES = ("analysis.json", "probes.png", "cka.png", "gradcam.png")


def _finite(v: Optional[float]) -> Optional[float]:
    return None if v is None or not math.isfinite(v) else float(v)


def check_outputs(run_dir: Path, out: Path, force: bool) -> None:
    """Refuse to replace a file, unless ``force`` or ``out`` is the run's own directory
    (where the fixed names are an earlier analysis of this run)."""
    if out.resolve() == run_dir.resolve():
        check_writable_dir(out, what="the run directory")
        return
    for name in FILES:
        check_new_file(out / name, force=force, what="analysis output")


def check_comparable(name_a: str, a: Dict[str, Any], name_b: str, b: Dict[str, Any],
                     why: str = "CKA compares runs of one task, dataset and input shape") -> None:
    """One ConfigError line naming both runs and what differs (``describe``'s keys)."""
    for key in a:
        if a[key] != b.get(key):
            raise ConfigError(f"runs {name_a} and {name_b} differ in {key}: {a[key]} vs "
                              f"{b.get(key)}; {why}")


def describe(cfg: Any, net: LocalNet, data: Any) -> Dict[str, Any]:
    """What two runs must share to be compared: task, dataset and input C x H x W."""
    h, w = data.image_size
    return {"task": net.task.name, "dataset": cfg.dataset, "input": f"{data.in_chans}x{h}x{w}"}


def analyze_run(run_dir: Union[str, Path], against: Optional[Union[str, Path]] = None,
                out: Optional[Union[str, Path]] = None, device: str = "cpu", samples: int = 512,
                images: int = 8, *, batch_size: int = 64, data_dir: Optional[str] = None,
                force: bool = False, progress: bool = False, seed: int = 0) -> Dict[str, Any]:
    """Probe every unit, compare with ``against`` by CKA and draw Grad-CAM of the heads.

    Writes ``analysis.json``, ``probes.png``, ``cka.png`` and ``gradcam.png`` into ``out``
    (default: the run directory) and returns the JSON's content. ``samples`` examples of
    each split feed the probes and the CKA; ``images`` test images the Grad-CAM grid.
    Without ``against`` the CKA map is the run against itself.
    """
    from ..devices import resolve_device
    from ..train import load_run

    if samples < 8 or images < 1 or batch_size < 4:
        raise ConfigError(f"analysis needs samples >= 8, images >= 1 and batch size >= 4 "
                          f"(CKA's unbiased estimator), got {samples}, {images}, {batch_size}")
    run_dir = Path(run_dir)
    out = run_dir if out is None else Path(out)
    check_outputs(run_dir, out, force)
    dev = resolve_device(device)
    cfg, net, data = load_run(run_dir, device=device, data_dir=data_dir)
    net.eval()
    other, odata = None, None
    if against is not None:
        ocfg, other, odata = load_run(Path(against), device=device, data_dir=data_dir)
        other.eval()
        check_comparable(str(run_dir), describe(cfg, net, data), str(against),
                         describe(ocfg, other, odata))
    primary = net.task.primary
    info = net.model.unit_info[:-1]
    ends = block_ends(net)
    result: Dict[str, Any] = {
        "run": str(run_dir), "model": cfg.model, "method": str(net.spec), "blocks": net.k,
        "dataset": cfg.dataset, "task": net.task.name, "primary": primary,
        "samples": samples,
        "units": [{"index": i, "name": u.name, "block_end": ends.index(i) if i in ends else None}
                  for i, u in enumerate(info)],
    }
    # probes: every unit (an E2E run then has a curve too), read at the block ends
    probes: Optional[List[Dict[str, Any]]] = None
    if net.task.name in PROBE_TASKS:
        gen = torch.Generator().manual_seed(seed)
        train = probe_features(net, data.train_batches(batch_size, gen, dev, augment=False),
                               samples, seed=seed, progress=progress, desc="train features")
        test = probe_features(net, data.test_batches(batch_size, dev), samples, seed=seed + 1,
                              progress=progress, desc="test features")
        probes = []
        for i, ((fx, fy), (tx, ty)) in enumerate(zip(train, test)):
            acc = train_probe(fx, fy, tx, ty, net.model.num_classes, seed=seed) \
                if len(fy) and len(ty) else {"train_acc": None, "test_acc": None}
            probes.append({"unit": i, "name": info[i].name, **{k: _finite(v) for k, v in acc.items()}})
        result["probe_note"] = None
    else:
        result["probe_note"] = (f"no linear probe for {net.task.name}: its targets give no "
                                "class per example")
    result["probes"] = probes
    heads = head_report(net, list(limited(data.test_batches(batch_size, dev), samples)), dev)
    result["head_metric"] = f"test_{primary}"
    result["block_rows"] = [
        {"block": j, "units": list(net.ranges[j]), "end_unit": e,
         "probe_test_acc": None if probes is None else probes[e]["test_acc"],
         "probe_train_acc": None if probes is None else probes[e]["train_acc"],
         "head": _finite(heads[j][f"test_{primary}"])}
        for j, e in enumerate(ends)]
    result["cka"] = _cka(net, other, against, data, odata,
                         dev, samples, batch_size, progress, ends)
    result["gradcam"] = _gradcam(net, data, dev, images, out)
    written = [n for n in FILES if n != "gradcam.png" or "file" in result["gradcam"]]
    result["files"] = [str(out / n) for n in written]
    check_writable_dir(out, what="--out")
    title = f"{cfg.model} {net.spec} K={net.k} on {cfg.dataset}"
    _save(plot_probes(result, title), out / "probes.png")
    _save(plot_cka(result, title), out / "cka.png")
    atomic_write_text(out / "analysis.json", json.dumps(result, indent=2, allow_nan=False) + "\n")
    return result


def _cka(net: LocalNet, other: Optional[LocalNet], against: Optional[Union[str, Path]],
         data: Any, odata: Any, dev: torch.device, samples: int, batch_size: int,
         progress: bool, ends: Sequence[int]) -> Dict[str, Any]:
    """The unit x unit CKA map against ``other`` (or the run itself) and, against another
    run, the CKA of each block's output with the unit at its depth there."""
    if net.task.name == "super_resolution":
        # whole SR test images differ in size (no batch of >= 4 to stack): the training
        # patches, un-augmented, serve instead
        batches = data.train_batches(batch_size, torch.Generator().manual_seed(0), dev,
                                     augment=False)
    else:
        batches = data.test_batches(batch_size, dev)
    matrix = unit_cka(net, other, batches, samples, stats=(data.mean, data.std),
                      other_stats=None if odata is None else (odata.mean, odata.std),
                      progress=progress)
    cols = net if other is None else other
    out: Dict[str, Any] = {
        "against": None if against is None else str(against),
        "against_method": None if other is None else f"{other.spec} K={other.k}",
        "rows": [u.name for u in net.model.unit_info[:-1]],
        "cols": [u.name for u in cols.model.unit_info[:-1]],
        "matrix": [[_finite(float(v)) for v in row] for row in matrix],
        "matching": None, "matched_by": None}
    if other is not None:
        nx, ny = net.model.num_body_units, other.model.num_body_units
        match = matching_units(ends, nx, ny)
        out["matched_by"] = "unit index" if nx == ny else "relative depth"
        out["matching"] = [{"block": j, "unit": e, "against_unit": m,
                            "cka": _finite(float(matrix[e, m]))}
                           for j, (e, m) in enumerate(zip(ends, match))]
    return out


def _gradcam(net: LocalNet, data: Any, dev: torch.device, images: int,
             out: Path) -> Dict[str, Any]:
    """Grad-CAM of the heads and the final classifier on the first ``images`` test images
    (the target: the true class), drawn as one grid."""
    if net.task.name in SKIPPED:
        return {"skipped": SKIPPED[net.task.name]}
    xs, ys = [], []
    for x, y in limited(data.test_batches(max(4, images), dev), images):
        xs.append(x)
        ys.append(y)
    x = torch.cat(xs)
    target = torch.cat(ys) if net.task.name == "classification" else None
    names, maps, notes = localnet_gradcam(net, x, target)
    shape = (1, -1, 1, 1)
    mean = torch.as_tensor(list(data.mean), device=x.device).view(shape)
    std = torch.as_tensor(list(data.std), device=x.device).view(shape)
    shown = (x * std + mean).clamp(0, 1).cpu()
    _save(plot_gradcam(shown, maps.cpu(), names), out / "gradcam.png")
    return {"file": "gradcam.png", "images": int(x.shape[0]), "methods": names,
            "target": "true class" if target is not None else "predicted class per pixel",
            "notes": notes}


# ---- figures ----------------------------------------------------------------------------
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display (as plots.py)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    plt = _plt()
    try:  # temp file + rename: a kill never leaves half a PNG
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)


def plot_probes(result: Dict[str, Any], title: str) -> Any:
    """Linear-probe accuracy of every unit, and each block's head metric at its end."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    if result["probes"]:
        units = [p["unit"] for p in result["probes"]]
        test = [100 * p["test_acc"] if p["test_acc"] is not None else float("nan")
                for p in result["probes"]]
        train = [100 * p["train_acc"] if p["train_acc"] is not None else float("nan")
                 for p in result["probes"]]
        ax.plot(units, test, marker="o", ms=3, label="linear probe (test)")
        ax.plot(units, train, ls="--", alpha=0.6, label="linear probe (train)")
    rows = [r for r in result["block_rows"] if r["head"] is not None]
    if rows:
        raw = result["primary"] == "psnr"  # dB, not a fraction
        ax.plot([r["end_unit"] for r in rows], [r["head"] if raw else 100 * r["head"] for r in rows],
                marker="s", ls="", ms=7, label=f"block's own predictor ({result['head_metric']})")
    for r in result["block_rows"][:-1]:
        ax.axvline(r["end_unit"] + 0.5, color="grey", alpha=0.3, lw=1)
    ax.set(xlabel="unit (depth); grey lines: block boundaries", ylabel="accuracy (%)",
           title=f"{title}\n{result['probe_note'] or 'linear probes per unit'}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_cka(result: Dict[str, Any], title: str) -> Any:
    """The unit x unit CKA heatmap, and the CKA of each block with its matching depth."""
    plt = _plt()
    cka = result["cka"]
    fig, (ax_map, ax_line) = plt.subplots(1, 2, figsize=(11, 4.5))
    m = torch.tensor([[float("nan") if v is None else v for v in row] for row in cka["matrix"]])
    im = ax_map.imshow(m.numpy(), origin="lower", vmin=0, vmax=1, cmap="magma", aspect="auto")
    fig.colorbar(im, ax=ax_map, label="linear CKA")
    other = cka["against_method"] or "itself"
    ax_map.set(xlabel=f"unit of {other}", ylabel="unit of this run", title=f"CKA vs {other}")
    for r in result["block_rows"][:-1]:
        ax_map.axhline(r["end_unit"] + 0.5, color="white", alpha=0.5, lw=1)
    if cka["matching"]:
        ax_line.plot([r["block"] for r in cka["matching"]],
                     [float("nan") if r["cka"] is None else r["cka"] for r in cka["matching"]],
                     marker="o")
        ax_line.set_xticks([r["block"] for r in cka["matching"]])
        ax_line.set(ylim=(0, 1.05), xlabel="block", ylabel="CKA at matching depth",
                    title=f"each block vs {other} ({cka['matched_by']})")
        ax_line.grid(alpha=0.3)
    else:
        ax_line.axis("off")
        ax_line.text(0.5, 0.5, "no --against run:\nthe map compares the run with itself",
                     ha="center", va="center")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_gradcam(images: torch.Tensor, maps: torch.Tensor, names: List[str]) -> Any:
    """One row per image: the image, then its Grad-CAM map per method over it."""
    plt = _plt()
    b, cols = images.shape[0], maps.shape[1] + 1
    fig, axes = plt.subplots(b, cols, figsize=(1.6 * cols, 1.6 * b), squeeze=False)
    gray = images.mean(1)  # the map is drawn over a grey copy, whatever the channels
    for r in range(b):
        img = images[r].permute(1, 2, 0).numpy() if images.shape[1] == 3 else gray[r].numpy()
        axes[r][0].imshow(img, cmap=None if images.shape[1] == 3 else "gray", vmin=0, vmax=1)
        for c in range(maps.shape[1]):
            axes[r][c + 1].imshow(gray[r].numpy(), cmap="gray", vmin=0, vmax=1)
            axes[r][c + 1].imshow(maps[r, c].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
    for c, name in enumerate(["image", *names]):
        axes[0][c].set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
