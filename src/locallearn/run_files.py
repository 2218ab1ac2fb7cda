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
from .tasks import Task, get_task


def metric_fields(task: Task) -> List[str]:
    """The columns of ``metrics.csv``: the task's metrics as ``test_<name>``."""
    return ["epoch", "train_loss", *(f"test_{c}" for c in task.columns), "lr", "seconds"]


METRIC_FIELDS = metric_fields(get_task("classification"))  # epoch, train_loss, test_acc, ...


def write_metrics(path: Path, rows: List[Dict[str, Any]],
                  fields: List[str] = METRIC_FIELDS) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def summarize(cfg: TrainConfig, net: LocalNet, rows: List[Dict[str, Any]], wall: float,
             device: torch.device, data: ImageData) -> Dict[str, Any]:
    key = f"test_{net.task.primary}"
    accs = [r[key] for r in rows]
    # the first epoch pays warm-up (allocator, kernel selection): leave it out when we can
    timed = rows[1:] if len(rows) > 1 else rows
    secs = sorted(r["sec_per_step"] for r in timed) if timed else [float("nan")]
    out: Dict[str, Any] = {
        "model": cfg.model, "method": str(net.spec), "blocks": net.k,
        "epochs": len(rows), "epochs_planned": cfg.epochs, "dataset": cfg.dataset,
        "task": net.task.name,
        f"final_{key}": accs[-1] if accs else None,
        f"best_{key}": max(accs) if accs else None,
        **{f"final_test_{c}": rows[-1][f"test_{c}"] if rows else None
           for c in net.task.columns if c != net.task.primary},
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
    write_metrics(out / "metrics.csv", rows, metric_fields(net.task))
    summary = {k: _finite(v) for k, v in summarize(cfg, net, rows, wall, device, data).items()}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    from .plots import plot_runs  # matplotlib: loaded when a run first draws its curves

    plot_runs({f"{net.spec} K={net.k}": rows}, out / "curves.png",
              title=f"{cfg.model} on {cfg.dataset}", metric=f"test_{net.task.primary}")
