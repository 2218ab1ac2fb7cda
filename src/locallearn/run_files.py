"""What a run writes after each epoch: metrics.csv, summary.json, curves.png (atomically)."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Dict, List

import torch

from .checkpoint import atomic_write_text
from .config import TrainConfig
from .data import ImageData
from .local_net import LocalNet
from .plots import plot_runs

METRIC_FIELDS = ["epoch", "train_loss", "test_acc", "lr", "seconds"]


def write_metrics(path: Path, rows: List[Dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def summarize(cfg: TrainConfig, net: LocalNet, rows: List[Dict[str, Any]], wall: float,
             device: torch.device, data: ImageData) -> Dict[str, Any]:
    accs = [r["test_acc"] for r in rows]
    # the first epoch pays warm-up (allocator, kernel selection): leave it out when we can
    timed = rows[1:] if len(rows) > 1 else rows
    secs = sorted(r["sec_per_step"] for r in timed) if timed else [float("nan")]
    out: Dict[str, Any] = {
        "model": cfg.model, "method": str(net.spec), "blocks": net.k,
        "epochs": len(rows), "epochs_planned": cfg.epochs, "dataset": cfg.dataset,
        "final_test_acc": accs[-1] if accs else None,
        "best_test_acc": max(accs) if accs else None,
        "wall_time_s": wall, "sec_per_step": secs[len(secs) // 2],
        "params_backbone": sum(p.numel() for p in net.model.parameters()),
        "params_trainable": sum(p.numel() for p in net.parameters() if p.requires_grad),
        "device": str(device), "mean": list(data.mean), "std": list(data.std),
        "num_classes": data.num_classes, "in_chans": data.in_chans,
        "image_size": list(data.image_size), "torch": torch.__version__,
    }
    if device.type == "cuda":
        out["cuda_max_memory_allocated"] = torch.cuda.max_memory_allocated(device)
    return out


def _finite(value: Any) -> Any:
    """JSON has no NaN / inf: such a number is written as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_run_files(cfg: TrainConfig, net: LocalNet, rows: List[Dict[str, Any]], wall: float,
                     device: torch.device, data: ImageData, out: Path) -> None:
    """metrics.csv, summary.json and curves.png, each written atomically."""
    write_metrics(out / "metrics.csv", rows)
    summary = {k: _finite(v) for k, v in summarize(cfg, net, rows, wall, device, data).items()}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    plot_runs({f"{net.spec} K={net.k}": rows}, out / "curves.png",
              title=f"{cfg.model} on {cfg.dataset}")
