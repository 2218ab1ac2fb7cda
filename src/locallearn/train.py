"""The epoch loop: optimizer, schedule, checkpoints, resume, signals, ranks agreeing.

Evaluation lives in ``evaluate.py`` and the per-epoch run files in ``run_files.py``
(both re-exported here)."""
from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from tqdm import tqdm

from .checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import ImageData, load_dataset
from .devices import resolve_device
from .errors import ConfigError
from .heads import head_options
from .local_net import LocalNet
from .methods import parse_method
from .optim import BlockOptimizers
from .reference import epoch_lr
from .parallel import allreduce_grads, any_rank, collective, init_distributed
from .nets import create_model
from .evaluate import autocast, evaluate, evaluate_heads, evaluate_metrics, head_report  # noqa: F401
from .run_files import METRIC_FIELDS, summarize, write_run_files  # noqa: F401 (API)
from .run_dir import CONFIG, prepare_run_dir, remove_stale_temps
from .run_lock import hold_run_dir
from .tasks import check_same_task
from .stop import NonFiniteLoss, PeerError, Stopped, StopSignals
from .version import __version__

def build_net(cfg: TrainConfig, data: ImageData) -> LocalNet:
    """The backbone and its LocalNet for ``cfg`` on ``data`` (on CPU)."""
    model = create_model(cfg.model, num_classes=data.num_classes, in_chans=data.in_chans,
                         image_size=data.image_size)
    check_same_task(model.task, getattr(data, "task", "classification"), cfg.model, cfg.dataset)
    # JSON turns tuples into lists: give the heads back the tuples they were built with
    head_opts = _tuples(cfg.head_opts)
    overrides = {k: _tuples(v) for k, v in cfg.head_overrides.items()}
    # "reference" is resolved into boundaries by cfg.validate(); the cuts are given
    split_by = "equal" if cfg.split.startswith("reference") else cfg.split
    net = LocalNet(model, cfg.blocks, cfg.method, image_size=data.image_size,
                    mean=data.mean, std=data.std, boundaries=cfg.boundaries,
                    head_opts=head_opts, lb=cfg.lb, ema_momentum=cfg.ema_momentum,
                    recompute=cfg.recompute, split_by=split_by, bridge_init=cfg.bridge_init,
                    ema_timing=cfg.ema_timing, head_init=cfg.head_init,
                    head_overrides=overrides)
    net.task = net.task.for_data(data)  # e.g. super-resolution: the set's PSNR rule
    if cfg.split == "time" and cfg.boundaries is None:
        # a timing is not repeatable: the cuts it chose are saved, so that a resume (or
        # another rank of a pipeline) builds the very same blocks
        cfg.boundaries = [start for start, _ in net.ranges[1:]]
    return net


def _tuples(opts: Dict[str, Any]) -> Dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in opts.items()}


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up from ``warmup_start_lr`` then cosine to 0, as a pure function of step
    (``lr_schedule="epoch"``: the reference's per-epoch values, ``reference.epoch_lr``)."""
    if cfg.lr_schedule == "epoch":
        return epoch_lr(cfg.lr, step // steps_per_epoch, cfg.epochs, cfg.warmup_epochs,
                        cfg.warmup_start_lr)
    total = cfg.epochs * steps_per_epoch
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warm:
        # a warm-up never starts above its peak: the default start (0.01, an SGD value)
        # would be a 50x overshoot at an Adam lr of 2e-4, and detectors diverge on it
        start = min(cfg.warmup_start_lr, cfg.lr)
        return start + (cfg.lr - start) * step / warm
    t = (step - warm) / max(1, total - warm)
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * min(1.0, t)))


def resolve_objective(cfg: TrainConfig, model: Any) -> Tuple[str, Dict[str, Any]]:
    """The method with its head family spelled out and every head option filled in (the
    family's defaults, then the model's recipe, then the user's), so that a saved config
    rebuilds the same objective whatever later versions choose as defaults."""
    spec = parse_method(cfg.method)
    if spec.is_e2e:
        return "e2e", {}
    family = model.default_head if spec.head == "auto" else spec.head
    opts: Dict[str, Any] = dict(head_options(family))
    opts.update(model.family_opts(family))
    opts.update(cfg.head_opts)
    method = family if spec.bridge is None else f"{family}+{spec.bridge}"
    return method, opts


def _identity(cfg: TrainConfig, net: LocalNet) -> Dict[str, Any]:
    """What a checkpoint must match to be loaded into ``net``."""
    # the method as resolved (``manpp`` -> ``greedy+manpp``): the same before and after a resume
    return {"model": cfg.model, "method": cfg.method, "blocks": net.k,
            "ranges": [list(r) for r in net.ranges], "num_classes": net.model.num_classes,
            "in_chans": net.model.in_chans}


def load_net_state(net: LocalNet, state: Dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    """Load a checkpoint's weights, or raise ConfigError saying how it differs from the run."""
    want, got = _identity(cfg, net), state.get("identity")
    if isinstance(got, dict):
        diff = [f"{k} {got.get(k)!r} (run: {v!r})" for k, v in want.items() if got.get(k) != v]
        if diff:
            raise ConfigError(f"checkpoint {path} belongs to another network: "
                              + "; ".join(diff))
    try:
        net.load_state_dict(state["net"])
    except (RuntimeError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()
        detail = " ".join(ln.strip() for ln in first[:3])[:240]
        raise ConfigError(f"checkpoint {path} does not fit {cfg.model} {cfg.method} "
                          f"K={cfg.blocks}: {detail}") from None


def fit(cfg: TrainConfig, *, resume: bool = False, progress: bool = True, force: bool = False,
        stop_after_epochs: Optional[int] = None,
        stop_after_steps: Optional[int] = None) -> Dict[str, Any]:
    """Train per ``cfg`` into ``cfg.out``; return the run summary.

    A checkpoint is written after every epoch and, every ``cfg.checkpoint_minutes``,
    mid-epoch. With ``resume`` the run continues from ``cfg.out/checkpoint.pt`` (its
    saved config wins, except ``device`` and a given ``data_dir``: the caller's) and, on the same kind of
    device, ends exactly as an uninterrupted run would, also from a mid-epoch checkpoint;
    a run killed before its first checkpoint starts over from its saved config.
    A new run refuses a non-empty ``cfg.out`` unless ``force`` (which replaces only the
    run's own files). SIGINT / SIGTERM end the run after the current step with a
    checkpoint (``Stopped``); a non-finite loss on more than ``cfg.nan_patience`` steps
    ends it with ``NonFiniteLoss``, keeping the last checkpoint. One process trains in
    ``cfg.out`` at a time (``run_lock.py``): a second is refused with ConfigError.
    ``stop_after_epochs`` / ``stop_after_steps`` stop early after that many epochs /
    steps in total, checkpointed as if the process were killed there (used by tests).
    """
    # under torchrun only rank 0 writes (and locks); a resumed run's saved config, not
    # yet read here, may be the one that says it is a pipeline, so go by RANK alone
    with hold_run_dir(Path(cfg.out), enabled=os.environ.get("RANK", "0") == "0"):
        return _fit(cfg, resume=resume, progress=progress, force=force,
                    stop_after_epochs=stop_after_epochs, stop_after_steps=stop_after_steps)


def _fit(cfg: TrainConfig, *, resume: bool, progress: bool, force: bool,
         stop_after_epochs: Optional[int], stop_after_steps: Optional[int]) -> Dict[str, Any]:
    cfg, out, has_ckpt = open_run(cfg, resume=resume, force=force)
    if cfg.pipeline:  # (also when a resumed run's saved config says so)
        from .parallel.pipeline import fit_pipeline

        return fit_pipeline(cfg, out, has_ckpt, progress=progress,
                            stop_after_epochs=stop_after_epochs,
                            stop_after_steps=stop_after_steps)
    ckpt_path = out / CHECKPOINT
    state = load_checkpoint(ckpt_path) if has_ckpt else None
    ctx = init_distributed(cfg.device, cfg.dist_timeout) if cfg.ddp else None
    world = ctx.world_size if ctx is not None else 1
    main = ctx is None or ctx.is_main  # only rank 0 writes files
    progress = progress and main
    device = ctx.device if ctx is not None else resolve_device(cfg.device)
    autocast(device, cfg.amp)  # fail fast on fp16 without CUDA, before loading anything
    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, limit_train=cfg.limit_train,
                        limit_test=cfg.limit_test, download=cfg.download,
                        image_size=cfg.image_size, seed=cfg.seed)
    net = build_net(cfg, data).to(device)
    cfg.method, cfg.head_opts = resolve_objective(cfg, net.model)
    cfg.version = cfg.version or __version__
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
        load_net_state(net, state, cfg, ckpt_path)
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["data_rng"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        rows, start_epoch, step = list(state["history"]), state["epoch"], state["step"]
        wall = state["wall_time_s"]
        if state.get("batch", 0):
            first_batch, carry_loss = state["batch"], state["loss_sum"]
            carry_s = state["epoch_seconds"]
    if main:
        cfg.save(out / CONFIG)
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
    timeout = cfg.dist_timeout
    saved_at = "no checkpoint yet" if state is None else \
        f"epoch {state['epoch']}" + (f" batch {state['batch']}" if state.get("batch") else "")

    def checkpoint(epoch_done: int, **mid: Any) -> None:
        nonlocal saved_at
        save_checkpoint(ckpt_path, {
            "net": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch_done,
            "step": step, "history": rows, "data_rng": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "identity": _identity(cfg, net), "wall_time_s": wall, **mid})
        saved_at = f"epoch {epoch_done}" + (f" batch {mid['batch']}" if mid else "")

    def agree(*flags: float) -> List[float]:
        """The ranks' maximum of each flag (identity on one process)."""
        if world == 1:
            return [float(f) for f in flags]
        return any_rank(flags, device, timeout, "agreeing on the step's outcome")

    bad = torch.zeros((), dtype=torch.long, device=device)  # steps with a non-finite loss

    def check_finite(where: str, nbad: float) -> None:
        if nbad > cfg.nan_patience:
            raise NonFiniteLoss(
                f"the loss became NaN or infinite ({int(nbad)} step(s), --nan-patience "
                f"{cfg.nan_patience}) at {where}; stopped, keeping the last checkpoint "
                f"({saved_at}); try a lower --lr" + (" or --amp none" if cfg.amp != "none" else ""))

    signals = StopSignals()
    with signals:
        for epoch in range(start_epoch, last_epoch):
            net.train()
            t0 = time.perf_counter() - carry_s
            last_save = time.perf_counter()
            epoch_rng = gen.get_state()  # mid-epoch checkpoints store this, not the current one
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
                        losses = net.train_step(x, y, backward=backward,
                                                after_block=opt.after_block)
                    else:  # all K local backwards, one gradient all-reduce, every block steps
                        losses = net.train_step(x, y, backward=backward)
                        allreduce_grads(trainable, world, timeout)
                        for j in range(net.k):
                            opt.after_block(j)
                opt.finish()
                net.ema_update()
                finite = torch.isfinite(losses).all()
                bad += ~finite
                loss_sum += torch.where(finite, losses[-1], 0.0)  # the mean of finite steps
                step += 1
                last = i + 1 == len(train)
                killed = stop_after_steps is not None and step >= stop_after_steps and not last
                # host syncs only every log_interval steps (and on a signal, at once on
                # one process); in DDP these points are the same on every rank
                sync = (i + 1) % cfg.log_interval == 0 or killed or \
                    (world == 1 and signals.signum is not None)
                if not sync or last:
                    continue
                due = main and every_s > 0 and time.perf_counter() - last_save >= every_s
                signum, nbad, due = agree(signals.signum or 0, bad.item(), due)
                check_finite(f"epoch {epoch + 1} batch {i + 1}", nbad)
                if progress:
                    bar.set_postfix(loss=f"{loss_sum.item() / (i + 1):.3f}",
                                    lr=f"{lr:.3g}")
                if signum or killed or due:
                    if main:  # the generator state of the epoch's start replays its order
                        checkpoint(epoch, batch=i + 1, loss_sum=loss_sum.detach().cpu(),
                                   epoch_seconds=time.perf_counter() - t0, data_rng=epoch_rng)
                    last_save = time.perf_counter()
                if signum:
                    bar.close()
                    raise _stopped(int(signum), saved_at, out)
                if killed:
                    bar.close()
                    return summarize(cfg, net, rows, wall, device, data)
            bar.close()
            if world > 1:
                with collective("summing the epoch's loss", timeout):
                    dist.all_reduce(loss_sum)
                loss_sum /= world
            signum, nbad = agree(signals.signum or 0, bad.item())
            check_finite(f"the end of epoch {epoch + 1}", nbad)
            train_loss = loss_sum.item() / len(train)
            seconds = time.perf_counter() - t0
            # every rank evaluates: no one waits idle
            scores = evaluate_metrics(net, test, device, cfg.amp)
            wall += time.perf_counter() - t0
            rows.append({"epoch": epoch + 1, "train_loss": train_loss,
                         **{f"test_{name}": v for name, v in scores.items()},
                         "lr": lr_at(cfg, step - 1, len(train)), "seconds": seconds,
                         "sec_per_step": seconds / len(train)})
            if progress:  # one line per epoch, also when the bar is off (logs, non-TTY)
                shown = "  ".join(f"test_{n} {net.task.show(n, v)}" for n, v in scores.items())
                tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}  {cfg.method} K={net.k}  "
                           f"train_loss {train_loss:.4f}  {shown}  {seconds:.1f}s")
            error: Optional[BaseException] = None
            if main:
                try:
                    checkpoint(epoch + 1)
                    write_run_files(cfg, net, rows, wall, device, data, out)
                except Exception as e:  # reported after the ranks agreed, below
                    error = e
            if world > 1:  # a failure of rank 0 ends every rank, never a lone barrier
                (failed,) = agree(error is not None)
                if failed and error is None:
                    raise PeerError(f"rank {ctx.rank}: rank 0 failed writing the run files "
                                    "(see its message)")
            if error is not None:
                raise error
            if signum:
                raise _stopped(int(signum), saved_at, out)
            if stop_after_steps is not None and step >= stop_after_steps:
                break
    return summarize(cfg, net, rows, wall, device, data)


def _main_proc(cfg: TrainConfig) -> bool:
    """Whether this process is (or, before the process group exists, will be) rank 0."""
    return not (cfg.ddp or cfg.pipeline) or os.environ.get("RANK", "0") == "0"


def open_run(cfg: TrainConfig, *, resume: bool, force: bool) -> Tuple[TrainConfig, Path, bool]:
    """Check (or, resuming, reload) the run directory: ``(config, out, has checkpoint)``.

    Under torchrun only the future rank 0 deletes or writes anything: this runs before
    the process group exists."""
    out = Path(cfg.out)
    main_proc = _main_proc(cfg)
    has_ckpt = prepare_run_dir(out, resume=resume, force=force, write=main_proc)
    if resume:
        # the saved config wins, except where to run: a run started on a GPU may be
        # finished on a CPU (or the other way round); the recipe stays the same
        device_name, data_dir, cfg = cfg.device, cfg.data_dir, TrainConfig.load(out / CONFIG)
        cfg.out, cfg.device = str(out), device_name
        if data_dir is not None:  # the data may have moved since
            cfg.data_dir = data_dir
    if main_proc:
        remove_stale_temps(out)  # temp files of a write that a kill interrupted
    cfg.validate()
    return cfg, out, has_ckpt


def _stopped(signum: int, saved_at: str, out: Path) -> Stopped:
    name = signal.Signals(signum).name
    return Stopped(signum, f"stopped by {name}; checkpoint at {saved_at} in {out} "
                           f"(continue with: locallearn train --resume --out {out})")


def load_run(run_dir: Path, device: str = "cpu",
             data_dir: Optional[str] = None) -> Tuple[TrainConfig, LocalNet, ImageData]:
    """Rebuild a run's LocalNet from ``config.json`` + ``checkpoint.pt``."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.json)")
    cfg = TrainConfig.load(run_dir / "config.json")
    if data_dir is not None:
        cfg.data_dir = data_dir
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, limit_train=cfg.limit_train,
                        limit_test=cfg.limit_test, download=cfg.download,
                        image_size=cfg.image_size, seed=cfg.seed)
    net, _ = restore_net(run_dir, cfg, data)
    return cfg, net.to(resolve_device(device)), data


def restore_net(run_dir: Path, cfg: TrainConfig, data: ImageData) -> Tuple[LocalNet, int]:
    """A run's LocalNet (on CPU) as its ``checkpoint.pt`` holds it, and the step it was
    saved at; ``cfg`` is the run's saved config, ``data`` its dataset."""
    state = load_checkpoint(run_dir / CHECKPOINT)
    net = build_net(cfg, data)
    load_net_state(net, state, cfg, run_dir / CHECKPOINT)
    return net, int(state["step"])
