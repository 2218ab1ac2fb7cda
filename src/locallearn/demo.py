"""The main job: ResNet-32 on Fashion-MNIST, E2E vs InfoPro+MAN++ (K=8), in a few minutes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

import torch

from .config import TrainConfig
from .errors import ConfigError
from .data import load_dataset
from .devices import resolve_device
from .measure import measure_step_memory
from .plots import plot_runs
from .train import build_net, fit

MB = 2.0 ** 20


def _step_memory(cfg: TrainConfig) -> Dict[str, float]:
    """Measure one training step of a fresh net of ``cfg`` (the meter, and CUDA's own peak)."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download,
                        limit_train=cfg.batch_size,
                        limit_test=cfg.batch_size)
    net = build_net(cfg, data).to(device)
    x, y = next(iter(data.test_batches(cfg.batch_size, device)))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    mem = measure_step_memory(net, x, y)
    out = {"activation_mb": mem.activation_bytes / MB, "total_mb": mem.total / MB}
    if device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / MB
    return out


def _check_same_demo(cfg: TrainConfig) -> None:
    """A rerun reuses the runs in ``out``: refuse when they were trained for another budget
    (their results would silently stand for the new one)."""
    saved = Path(cfg.out) / "config.json"
    if not saved.is_file():
        return
    old = TrainConfig.load(saved)
    diff = [f"{k}={getattr(old, k)!r}" for k in ("epochs", "limit_train", "limit_test", "blocks")
            if getattr(old, k) != getattr(cfg, k)]
    if diff:
        raise ConfigError(f"{cfg.out} holds a demo run with {', '.join(diff)}; delete it or "
                          "pass another --out to run this budget")


def run_demo(out: Path = Path("runs/demo"), epochs: int = 2, limit_train: Optional[int] = 10000,
             limit_test: Optional[int] = 2000, blocks: int = 8, device: str = "auto",
             data_dir: Optional[str] = None, progress: bool = True,
             download: bool = False) -> List[Dict[str, object]]:
    """Train E2E and ``infopro+manpp`` with the same budget; print a table, write a plot."""
    rows: List[Dict[str, object]] = []
    curves = {}
    cfgs = [TrainConfig(model="resnet32", method=method, blocks=k, dataset="fashion-mnist",
                        data_dir=data_dir, download=download, epochs=epochs,
                        batch_size=128, lr=0.1,
                        limit_train=limit_train, limit_test=limit_test, device=device,
                        channels_last=True, out=str(out / method.replace("+", "_"))).validate()
            for method, k in (("e2e", 1), ("infopro+manpp", blocks))]
    for cfg in cfgs:  # before any training: a rerun must mean the same demo
        _check_same_demo(cfg)
    for cfg in cfgs:
        method, k = cfg.method, cfg.blocks
        # a rerun continues or reuses the run (or restarts it from its config, when killed
        # before its first checkpoint)
        resume = (Path(cfg.out) / "config.json").is_file()
        if progress:
            print(f"== {method} (K={k}) -> {cfg.out}{'  [resuming]' if resume else ''}", flush=True)
        summary = fit(cfg, resume=resume, progress=progress)
        history = json.loads((Path(cfg.out) / "summary.json").read_text())
        curves[f"{method} K={k}"] = _read_rows(Path(cfg.out))
        rows.append({"method": method, "K": k, "test_acc": summary["final_test_acc"],
                     "sec_per_step": history["sec_per_step"], **_step_memory(cfg)})
    plot_path = out / "demo.png"
    plot_runs(curves, plot_path, title="ResNet-32 on Fashion-MNIST: E2E vs InfoPro+MAN++")
    _print_table(rows, epochs, limit_train)
    print(f"plot: {plot_path}   runs: {out}/*/ (metrics.csv, summary.json, curves.png)")
    return rows


def _read_rows(run: Path) -> List[Dict[str, float]]:
    import csv

    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _print_table(rows: List[Dict[str, object]], epochs: int, limit_train: Optional[int]) -> None:
    cuda = any("cuda_peak_mb" in r for r in rows)
    head = f"{'method':16s} {'K':>3s} {'test acc':>9s} {'s/step':>8s} {'act. MB':>8s} {'total MB':>9s}"
    head += f" {'CUDA peak MB':>13s}" if cuda else ""
    print(f"\nResNet-32, Fashion-MNIST, {epochs} epoch(s) on {limit_train or 60000} samples, "
          "batch 128 (memory: one training step; act. = tensors saved for backward)")
    print(head)
    print("-" * len(head))
    for r in rows:
        line = (f"{r['method']:16s} {r['K']:>3d} {100 * float(r['test_acc']):>8.2f}% "
                f"{float(r['sec_per_step']):>8.3f} {float(r['activation_mb']):>8.1f} "
                f"{float(r['total_mb']):>9.1f}")
        if cuda:
            line += f" {float(r['cuda_peak_mb']):>13.1f}"
        print(line)
