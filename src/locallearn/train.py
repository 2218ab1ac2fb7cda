"""The epoch loop: optimizer, schedule, evaluation, metrics, atomic checkpoints, resume."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
import torch.distributed as dist
from tqdm import tqdm

from .checkpoint import CHECKPOINT, atomic_write_text, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import ImageData, load_dataset
from .devices import resolve_device
from .errors import ConfigError
from .local_net import LocalNet
from .optim import BlockOptimizers
from .parallel import allreduce_grads, init_distributed
from .nets import create_model
from .plots import plot_runs

METRIC_FIELDS = ["epoch", "train_loss", "test_acc", "lr", "seconds"]


def build_net(cfg: TrainConfig, data: ImageData) -> LocalNet:
    """The backbone and its LocalNet for ``cfg`` on ``data`` (on CPU)."""
    model = create_model(cfg.model, num_classes=data.num_classes, in_chans=data.in_chans,
                         image_size=data.image_size)
    return LocalNet(model, cfg.blocks, cfg.method, image_size=data.image_size,
                    mean=data.mean, std=data.std, boundaries=cfg.boundaries,
                    head_opts=cfg.head_opts, lb=cfg.lb, ema_momentum=cfg.ema_momentum,
                    recompute=cfg.recompute, split_by=cfg.split, bridge_init=cfg.bridge_init)


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Autocast for ``amp`` in {none, bf16, fp16} on the device's type."""
    if amp == "none":
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError(f"amp 'fp16' needs a CUDA device (got {device}); use --amp bf16")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up from ``warmup_start_lr`` then cosine to 0, as a pure function of step."""
    total = cfg.epochs * steps_per_epoch
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warm:
        return cfg.warmup_start_lr + (cfg.lr - cfg.warmup_start_lr) * step / warm
    t = (step - warm) / max(1, total - warm)
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * min(1.0, t)))


@torch.no_grad()
def evaluate(net: LocalNet, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
             device: torch.device, amp: str = "none") -> float:
    """Top-1 accuracy of the backbone (heads unused) on ``batches``."""
    was_training = net.training
    net.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    count = 0
    with autocast(device, amp):
        for x, y in batches:
            correct += (net(x).argmax(1) == y).sum()
            count += y.numel()
    net.train(was_training)
    return correct.item() / max(1, count)


@torch.no_grad()
def evaluate_heads(net: LocalNet, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
                   device: torch.device, amp: str = "none") -> List[Optional[float]]:
    """Top-1 accuracy of every block's classifier (``LocalNet.head_logits``); None for
    heads without class scores. The last entry is the network's own accuracy."""
    was_training = net.training
    net.eval()
    correct = torch.zeros(net.k, dtype=torch.long, device=device)
    has = [True] * net.k
    count = 0
    with autocast(device, amp):
        for x, y in batches:
            for j, scores in enumerate(net.head_logits(x)):
                if scores is None:
                    has[j] = False
                else:
                    correct[j] += (scores.argmax(1) == y).sum()
            count += y.numel()
    net.train(was_training)
    return [c / max(1, count) if ok else None for c, ok in zip(correct.tolist(), has)]


def head_report(net: LocalNet, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
                device: torch.device) -> List[Dict[str, Any]]:
    """One row per block: its units, its classifier's test accuracy (``evaluate_heads``),
    and for the bridge after it MAN++'s scale and the EMA copy's lag (None where absent)."""
    accs = evaluate_heads(net, batches, device)
    pad = [None] * (net.k - len(net.bridges))  # no bridge after the last block (or any)
    scales = net.bridge_scales() + pad
    lags: List[Optional[float]] = [*net.ema_lags(), *pad]
    return [dict(block=j, units=list(net.ranges[j]), test_acc=acc, bridge_scale=s, ema_lag=lag)
            for j, (acc, s, lag) in enumerate(zip(accs, scales, lags))]


def _write_metrics(path: Path, rows: List[Dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _summary(cfg: TrainConfig, net: LocalNet, rows: List[Dict[str, Any]], wall: float,
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


def fit(cfg: TrainConfig, *, resume: bool = False, progress: bool = True,
        stop_after_epochs: Optional[int] = None,
        stop_after_steps: Optional[int] = None) -> Dict[str, Any]:
    """Train per ``cfg`` into ``cfg.out``; return the run summary.

    A checkpoint is written after every epoch and, every ``cfg.checkpoint_minutes``,
    mid-epoch. With ``resume`` the run continues from ``cfg.out/checkpoint.pt`` (its
    saved config wins, except ``device``, which is the caller's) and, on the same kind of
    device, ends exactly as an uninterrupted run would, also from a mid-epoch checkpoint.
    ``stop_after_epochs`` / ``stop_after_steps`` stop early after that many epochs /
    steps in total, checkpointed as if the process were killed there (used by tests).
    """
    out = Path(cfg.out)
    ckpt_path = out / CHECKPOINT
    state: Optional[Dict[str, Any]] = None
    if resume:
        state = load_checkpoint(ckpt_path)
        saved = out / "config.json"
        if saved.is_file():
            # the saved config wins, except where to run: a run started on a GPU may be
            # finished on a CPU (or the other way round); the recipe stays the same
            device, cfg = cfg.device, TrainConfig.load(saved)
            cfg.out, cfg.device = str(out), device
    elif ckpt_path.exists():
        raise ConfigError(f"run directory {out} already holds a checkpoint; pass --resume to "
                          "continue it or choose another --out")
    cfg.validate()
    ctx = init_distributed(cfg.device) if cfg.ddp else None
    world = ctx.world_size if ctx is not None else 1
    main = ctx is None or ctx.is_main  # only rank 0 evaluates, logs and writes files
    progress = progress and main
    device = ctx.device if ctx is not None else resolve_device(cfg.device)
    autocast(device, cfg.amp)  # fail fast on fp16 without CUDA, before loading anything
    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, limit_train=cfg.limit_train,
                        limit_test=cfg.limit_test, download=cfg.download,
                        image_size=cfg.image_size)
    net = build_net(cfg, data).to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None
    opt = BlockOptimizers(net, cfg, scaler)
    gen = torch.Generator().manual_seed(cfg.seed)
    rows: List[Dict[str, Any]] = []
    start_epoch, step, wall = 0, 0, 0.0
    # mid-epoch resume: batches already done, and the epoch's loss sum and seconds so far
    first_batch, carry_loss, carry_s = 0, torch.zeros(()), 0.0
    if state is not None:
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["data_rng"])
        torch.set_rng_state(state["torch_rng"])
        rows, start_epoch, step = list(state["history"]), state["epoch"], state["step"]
        wall = state["wall_time_s"]
        if state.get("batch", 0):
            first_batch, carry_loss = state["batch"], state["loss_sum"]
            carry_s = state["epoch_seconds"]
    if main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.json")
    train = data.train_batches(cfg.batch_size, gen, device, channels_last=cfg.channels_last,
                               shard=(ctx.rank, world) if ctx is not None else (0, 1),
                               augment=cfg.augment)
    trainable = [p for p in net.parameters() if p.requires_grad]
    test = data.test_batches(cfg.eval_batch_size, device, channels_last=cfg.channels_last)
    if len(train) == 0:
        raise ConfigError(f"batch-size {cfg.batch_size} is larger than the {data.num_train} "
                          "training samples")
    backward = (lambda loss: scaler.scale(loss).backward()) if scaler is not None else None
    last_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, stop_after_epochs)
    every_s = 60.0 * cfg.checkpoint_minutes

    def checkpoint(epoch_done: int, **mid: Any) -> None:
        save_checkpoint(ckpt_path, {
            "net": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch_done,
            "step": step, "history": rows, "data_rng": gen.get_state(),
            "torch_rng": torch.get_rng_state(), "wall_time_s": wall, **mid})

    for epoch in range(start_epoch, last_epoch):
        net.train()
        t0 = time.perf_counter() - carry_s
        last_save = time.perf_counter()
        epoch_rng = gen.get_state()  # mid-epoch checkpoints store this, not the current state
        loss_sum = carry_loss.to(device)
        start, first_batch, carry_loss, carry_s = first_batch, 0, torch.zeros(()), 0.0
        bar = tqdm(train.iter_from(start), total=len(train), initial=start,
                   desc=f"{cfg.method} K={net.k} epoch {epoch + 1}/{cfg.epochs}",
                   disable=None if progress else True, leave=False, dynamic_ncols=True)
        for i, (x, y) in enumerate(bar, start=start):
            lr = lr_at(cfg, step, len(train))
            opt.set_lr(lr)
            with autocast(device, cfg.amp):
                if world == 1:  # step each block right after its own backward
                    losses = net.train_step(x, y, backward=backward, after_block=opt.after_block)
                else:  # all K local backwards, one gradient all-reduce, then every block steps
                    losses = net.train_step(x, y, backward=backward)
                    allreduce_grads(trainable, world)
                    for j in range(net.k):
                        opt.after_block(j)
            opt.finish()
            net.ema_update()
            loss_sum += losses[-1]
            step += 1
            if progress and (i + 1) % cfg.log_interval == 0:  # the only host sync in the loop
                bar.set_postfix(loss=f"{loss_sum.item() / (i + 1):.3f}", lr=f"{lr:.3g}")
            killed = stop_after_steps is not None and step >= stop_after_steps \
                and i + 1 < len(train)
            if main and i + 1 < len(train) and (killed or (
                    every_s > 0 and time.perf_counter() - last_save >= every_s)):
                # mid-epoch: the generator state of the epoch's start replays its order
                checkpoint(epoch, batch=i + 1, loss_sum=loss_sum.detach().cpu(),
                           epoch_seconds=time.perf_counter() - t0, data_rng=epoch_rng)
                last_save = time.perf_counter()
            if killed:
                bar.close()
                return _summary(cfg, net, rows, wall, device, data)
        if world > 1:
            dist.all_reduce(loss_sum)
            loss_sum /= world
        train_loss = loss_sum.item() / len(train)
        seconds = time.perf_counter() - t0
        if not main:  # rank 0 evaluates and writes; the others wait for it
            dist.barrier()
            continue
        acc = evaluate(net, test, device, cfg.amp)
        wall += time.perf_counter() - t0
        rows.append({"epoch": epoch + 1, "train_loss": train_loss, "test_acc": acc,
                     "lr": lr_at(cfg, step - 1, len(train)), "seconds": seconds,
                     "sec_per_step": seconds / len(train)})
        if progress:  # one line per epoch, also when the bar is off (logs, non-TTY)
            tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}  {cfg.method} K={net.k}  "
                       f"train_loss {train_loss:.4f}  test_acc {100 * acc:.2f}%  {seconds:.1f}s")
        checkpoint(epoch + 1)
        _write_metrics(out / "metrics.csv", rows)
        summary = _summary(cfg, net, rows, wall, device, data)
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        plot_runs({f"{net.spec} K={net.k}": rows}, out / "curves.png",
                  title=f"{cfg.model} on {cfg.dataset}")
        if stop_after_steps is not None and step >= stop_after_steps:
            break
        if world > 1:
            dist.barrier()
    return _summary(cfg, net, rows, wall, device, data)


def load_run(run_dir: Path, device: str = "cpu",
             data_dir: Optional[str] = None) -> Tuple[TrainConfig, LocalNet, ImageData]:
    """Rebuild a run's LocalNet from ``config.json`` + ``checkpoint.pt``."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.json)")
    cfg = TrainConfig.load(run_dir / "config.json")
    if data_dir is not None:
        cfg.data_dir = data_dir
    state = load_checkpoint(run_dir / CHECKPOINT)
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, limit_train=cfg.limit_train,
                        limit_test=cfg.limit_test, download=cfg.download,
                        image_size=cfg.image_size)
    net = build_net(cfg, data)
    net.load_state_dict(state["net"])
    return cfg, net.to(resolve_device(device)), data
