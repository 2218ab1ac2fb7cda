"""PPLL: pipeline-parallel local learning, launched with
``torchrun --nproc-per-node N -m locallearn train ... --pipeline``.

Rank r owns a contiguous group of blocks (``stage.Stage``). Rank 0 reads the data; each
rank runs its blocks' forward, local backwards and optimizer steps (``LocalNet.
train_blocks``: the one step protocol) and sends the detached output of its last block,
the target and the feature bank forward (``messages.Link``). No gradient travels back;
what does travel back is one small reply per message, which

- bounds the pipe: after sending batch t a rank waits for the reply to batch t-D
  (D = ``--pipeline-depth``; ``--pipeline-mode lockstep`` is D=0, one batch in the pipe);
- carries, every ``--ema-sync-every`` steps, the weights of the replying rank's first
  unit: bridge j's EMA copy tracks that unit through a local mirror. The mirror used
  after step t holds the weights of step t-D (or the last synced step before it). This
  staleness is deterministic: it does not depend on timing, so a streaming run is
  reproducible and resumes exactly; with D=0 and sync every step it is none, and the
  pipeline equals single-process training.

Control messages (end of epoch, evaluation batches, end of run) flow down the same pipe;
a rank replies to one only after every rank behind it has, so when rank 0's reply comes
back the pipe is empty and the ranks may meet in collectives (epoch end, checkpoints).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
from tqdm import tqdm

from ..bank import FeatureBank
from ..config import TrainConfig
from ..data import load_dataset
from ..errors import ConfigError
from ..evaluate import autocast
from ..optim import BlockOptimizers
from ..run_dir import CONFIG
from ..stop import NonFiniteLoss, Stopped, StopSignals
from ..version import __version__
from . import pipe_ckpt
from .ddp import any_rank, collective, init_distributed
from .messages import optional_link
from .pipe_setup import (agree_on_errors, broadcast_json, close_group, data_info,
                         info_namespace)
from .stage import Stage, assign_blocks

Message = Tuple[Dict[str, Any], Any]


def fit_pipeline(cfg: TrainConfig, out: Path, has_ckpt: bool, *, progress: bool = True,
                 stop_after_epochs: Optional[int] = None,
                 stop_after_steps: Optional[int] = None) -> Dict[str, Any]:
    """``train.fit`` for ``cfg.pipeline``: this rank's part of the job (see the module)."""
    ctx = init_distributed(cfg.device, cfg.dist_timeout, flag="--pipeline")
    runner = _Runner(cfg, out, has_ckpt, ctx, progress, stop_after_epochs, stop_after_steps)
    try:
        return runner.run()
    finally:
        runner.close()


def _local(metric: Any) -> Any:
    """The last rank alone sees the outputs: its torchmetrics must not wait for the other
    ranks in a gather at ``compute()`` (their default once torch.distributed is up)."""
    found = [metric, *vars(metric).values()]  # a torchmetrics Metric, or an object holding some
    found += [m for f in list(found) if hasattr(f, "modules") for m in f.modules()]
    for m in found:
        if hasattr(m, "sync_on_compute"):
            m.sync_on_compute = m._to_sync = m.dist_sync_on_step = False
    return metric


class _Runner(pipe_ckpt.Checkpointing):
    def __init__(self, cfg: TrainConfig, out: Path, has_ckpt: bool, ctx: Any, progress: bool,
                 stop_after_epochs: Optional[int], stop_after_steps: Optional[int]) -> None:
        from ..train import build_net, lr_at, resolve_objective  # (train imports this module)

        self.lr_at = lr_at
        self.cfg, self.out, self.ctx = cfg, out, ctx
        self.rank, self.world, self.device = ctx.rank, ctx.world_size, ctx.device
        self.main = self.rank == 0
        self.timeout = cfg.dist_timeout
        self.progress = progress and self.main
        self.stop_after_steps = stop_after_steps
        self.depth = 0 if cfg.pipeline_mode == "lockstep" else cfg.pipeline_depth
        torch.manual_seed(cfg.seed)
        self.data: Any = None
        error: Optional[BaseException] = None
        info: Optional[Dict[str, Any]] = None
        try:  # rank 0 alone reads the data; a mistake is reported once, every rank exits 2
            autocast(self.device, cfg.amp)
            if self.main:
                self.data = load_dataset(cfg.dataset, data_dir=cfg.data_dir,
                                         limit_train=cfg.limit_train, limit_test=cfg.limit_test,
                                         download=cfg.download, image_size=cfg.image_size,
                                         seed=cfg.seed)
                self.gen = torch.Generator().manual_seed(cfg.seed)
                self.train = self.data.train_batches(cfg.batch_size, self.gen, self.device,
                                                     channels_last=cfg.channels_last,
                                                     augment=cfg.augment)
                self.test = self.data.test_batches(cfg.eval_batch_size, self.device,
                                                   channels_last=cfg.channels_last)
                if len(self.train) == 0:
                    raise ConfigError(f"batch-size {cfg.batch_size} is larger than the "
                                      f"{self.data.num_train} training samples")
                info = data_info(self.data, len(self.train), len(self.test))
        except ConfigError as e:
            error = e
        agree_on_errors(error, ctx, self.timeout)
        info = broadcast_json(info, 0, ctx, self.timeout, "receiving the dataset's shape")
        torch.set_rng_state(torch.tensor(info["rng"], dtype=torch.uint8))  # same init as rank 0
        self.steps_per_epoch = info["steps"]
        if cfg.split == "time" and cfg.boundaries is None:  # rank 0 times, all use its cuts
            try:
                if self.main:
                    rng = torch.get_rng_state()
                    build_net(cfg, info_namespace(info))
                    torch.set_rng_state(rng)
            except ConfigError as e:
                error = e
            agree_on_errors(error, ctx, self.timeout)
            cfg.boundaries = broadcast_json({"cuts": cfg.boundaries} if self.main else None,
                                            0, ctx, self.timeout, "sharing the cuts")["cuts"]
        try:
            net = build_net(cfg, info_namespace(info))
            cfg.method, cfg.head_opts = resolve_objective(cfg, net.model)
            cfg.version = cfg.version or __version__
            self.ranges = assign_blocks(net.k, self.world)
        except ConfigError as e:
            error = e
        agree_on_errors(error, ctx, self.timeout)
        first, last = self.ranges[self.rank]
        self.stage = Stage(net, first, last, self.device)
        self.net = net
        if cfg.channels_last:
            for m in self.stage.owned_modules():
                m.to(memory_format=torch.channels_last)
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.amp == "fp16" else None
        self.opt = BlockOptimizers(net, cfg, self.scaler, blocks=range(first, last))
        prev = None if self.stage.is_first else self.rank - 1
        nxt = None if self.stage.is_last else self.rank + 1
        t = self.timeout
        self.inbox = optional_link(prev, self.device, t, f"data from rank {prev}")
        self.to_prev = optional_link(prev, self.device, t, f"replies to rank {prev}")
        self.outbox = optional_link(nxt, self.device, t, f"data to rank {nxt}")
        self.from_next = optional_link(nxt, self.device, t, f"replies from rank {nxt}")
        self.sent = self.acked = 0
        self.pending: Dict[int, List[torch.Tensor]] = {}  # EMA weights by step, not yet used
        self.rows: List[Dict[str, Any]] = []
        self.epoch = self.step = self.first_batch = 0
        self.wall = 0.0
        self.loss_sum = torch.zeros((), device=self.device)
        self.bad = torch.zeros((), dtype=torch.long, device=self.device)
        self.carry_s = 0.0
        self.t0: Optional[float] = None
        self.train_seconds = 0.0
        self.epoch_rng: Optional[torch.Tensor] = None
        self.saved_at = "no checkpoint yet"
        self.last_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs,
                                                                            stop_after_epochs)
        if has_ckpt:
            self._resume()
        if self.main:
            cfg.save(out / CONFIG)
        self.signals = StopSignals()
        self.bar: Optional[tqdm] = None
        self.metric: Any = None

    # ---- the message loop: the same on every rank -------------------------------------
    def run(self) -> Dict[str, Any]:
        with self.signals:
            for info, tree in (self._source() if self.main else self._receive()):
                kind = info["kind"]
                if kind == "batch":
                    self._train_batch(info, tree)
                    if info.get("flag"):
                        self._pass_on(info)
                        self._checkpoint(info["epoch"], mid=True, batch=info["batch"] + 1)
                        if info["flag"] == "signal":
                            raise self._stopped(int(info["signum"]))
                        if info["flag"] == "kill":
                            break
                elif kind == "eval":
                    self._eval_batch(info, tree)
                else:  # epoch_end, eval_end, run_end: every rank behind us finishes first
                    self._pass_on(info)
                    if kind == "epoch_end":  # the pipe is empty: the epoch's training is done
                        self.train_seconds = time.perf_counter() - (self.t0 or time.perf_counter())
                        self.t0 = None
                        self.metric = _local(self.net.task.metric(
                            self.net.model.num_classes, self.device))
                        self.net.eval()
                    elif kind == "eval_end":
                        self.net.train()
                        self._end_epoch(info["epoch"])
                    else:
                        break
        close_group(self.timeout)
        return self._summary()

    def _source(self) -> Iterator[Message]:
        """Rank 0: the messages, made from the data."""
        every_s = 60.0 * self.cfg.checkpoint_minutes
        for epoch in range(self.epoch, self.last_epoch):
            self.epoch_rng = self.gen.get_state()
            self.last_save = time.perf_counter()
            start = self.first_batch
            self.bar = tqdm(total=len(self.train), initial=start, leave=False,
                            dynamic_ncols=True, disable=None if self.progress else True,
                            desc=f"{self.cfg.method} K={self.net.k} pipeline x{self.world} "
                                 f"epoch {epoch + 1}/{self.cfg.epochs}")
            for i, (x, y) in enumerate(self.train.iter_from(start), start=start):
                y = self.net._check_batch(x, y)
                flag, signum = None, self.signals.signum or 0
                if i + 1 < len(self.train):
                    if self.stop_after_steps is not None and self.step + 1 >= self.stop_after_steps:
                        flag = "kill"
                    elif signum:
                        flag = "signal"
                    elif every_s > 0 and time.perf_counter() - self.last_save >= every_s:
                        flag = "checkpoint"
                        self.last_save = time.perf_counter()
                yield ({"kind": "batch", "epoch": epoch, "batch": i, "step": self.step,
                        "flag": flag, "signum": signum},
                       {"h": x, "y": y, "image": x, "bank": {}})
                self.bar.update(1)
            self.bar.close()
            yield {"kind": "epoch_end", "epoch": epoch}, None
            for x, y in self.test:
                yield {"kind": "eval", "epoch": epoch}, {"h": x, "y": y, "image": x, "bank": {}}
            yield {"kind": "eval_end", "epoch": epoch}, None
            if self.stop_after_steps is not None and self.step >= self.stop_after_steps:
                break
        yield {"kind": "run_end"}, None

    def _receive(self) -> Iterator[Message]:
        """Ranks > 0: the messages, as the previous rank sends them."""
        assert self.inbox is not None
        while True:
            info, tree = self.inbox.recv()
            yield info, tree
            if info["kind"] == "run_end":
                return

    # ---- one message -----------------------------------------------------------------
    def _bank(self, tree: Any) -> FeatureBank:
        return FeatureBank.restore(tree["image"], tree["bank"], self.net.mean, self.net.std)

    def _train_batch(self, info: Dict[str, Any], tree: Any) -> None:
        st, step = self.stage, info["step"]
        self.step = step
        if self.t0 is None:  # the epoch's first batch here (after a resume: its time so far)
            self.t0 = time.perf_counter() - self.carry_s
            self.first_batch, self.carry_s = 0, 0.0
        self.opt.set_lr(self.lr_at(self.cfg, step, self.steps_per_epoch))
        backward = (lambda loss: self.scaler.scale(loss).backward()) if self.scaler else None
        bank = self._bank(tree)
        with autocast(self.device, self.cfg.amp):
            losses = self.net.train_blocks(tree["h"], tree["y"], bank, st.first, st.last,
                                           backward, self.opt.after_block, st.sources)
        self.opt.finish()
        finite = torch.isfinite(losses).all()
        self.bad += ~finite
        if st.is_last:
            self.loss_sum += torch.where(finite, losses[-1], 0.0)
        self._send_on(info, tree, bank)
        if self.to_prev is not None:  # our first unit's weights, for the previous bridge
            sync = len(self.net.bridges) and (step + 1) % self.cfg.ema_sync_every == 0
            self.to_prev.send({"kind": "reply", "step": step, "weights": bool(sync)},
                              st.first_unit_weights() if sync else None)
        if st.remote_bridge:  # the mirror moves to the weights of step t-D
            s = step - self.depth
            if s >= 0 and (s + 1) % self.cfg.ema_sync_every == 0:
                while s not in self.pending:
                    self._take_reply()
                st.set_mirror(self.pending.pop(s))
        st.ema_update()
        self.step = step + 1

    @torch.no_grad()
    def _eval_batch(self, info: Dict[str, Any], tree: Any) -> None:
        st = self.stage
        bank = self._bank(tree)
        h = tree["h"]
        with autocast(self.device, self.cfg.amp):
            for _, h in self.net._walk(h, cut=False, bank=bank, first=st.first, last=st.last):
                pass
        if st.is_last:
            self.metric.update(h, tree["y"])
        else:
            self._send_on(info, dict(tree, h=h), bank)
        if self.to_prev is not None:
            self.to_prev.send({"kind": "reply", "step": -1, "weights": False})

    def _send_on(self, info: Dict[str, Any], tree: Any, bank: FeatureBank) -> None:
        """Send the batch on (block output, target, bank) within the pipe's bound."""
        if self.outbox is None:
            return
        h = self.net.last_output if info["kind"] == "batch" else tree["h"]
        self.outbox.send(info, {"h": h, "y": tree["y"], "image": bank.image,
                                "bank": bank.entries()})
        self.sent += 1
        while self.sent - self.acked > self.depth:
            self._take_reply()

    def _take_reply(self) -> None:
        assert self.from_next is not None
        info, weights = self.from_next.recv()
        self.acked += 1
        if info.get("weights"):
            self.pending[int(info["step"])] = [w.clone() for w in weights]

    def _pass_on(self, info: Dict[str, Any]) -> None:
        """Hand a control message (or a flagged batch) on and wait until every rank behind
        us has handled it: the pipe behind us is then empty."""
        if self.outbox is not None:
            if info["kind"] != "batch":  # a flagged batch went on with its data already
                self.outbox.send(info)
                self.sent += 1
            while self.acked < self.sent:
                self._take_reply()
            self.outbox.flush()
        if self.to_prev is not None:
            if info["kind"] != "batch":  # (a batch was answered when it was trained)
                self.to_prev.send({"kind": "reply", "step": -1, "weights": False})
            self.to_prev.flush()

    # ---- epoch end, checkpoints, resume -------------------------------------------------
    def _end_epoch(self, epoch: int) -> None:
        seconds = self.train_seconds  # (evaluation left out, as in single-process runs)
        signum, nbad, seconds = any_rank([self.signals.signum or 0, self.bad.item(), seconds],
                                         self.device, self.timeout, "ending the epoch")
        if nbad > self.cfg.nan_patience:
            raise NonFiniteLoss(f"the loss became NaN or infinite ({int(nbad)} step(s), "
                                f"--nan-patience {self.cfg.nan_patience}) in epoch {epoch + 1}; "
                                f"stopped, keeping the last checkpoint ({self.saved_at})")
        columns = list(self.net.task.columns)
        res = torch.zeros(1 + len(columns), dtype=torch.float64, device=self.device)
        if self.stage.is_last:
            scores = self.metric.compute()
            res[0] = self.loss_sum.double()
            res[1:] = torch.tensor([float(scores[c]) for c in columns], dtype=torch.float64)
        with collective("sharing the epoch's scores", self.timeout):
            dist.broadcast(res, self.world - 1)
        self.wall += seconds
        vals = res.tolist()
        self.rows.append({"epoch": epoch + 1, "train_loss": vals[0] / self.steps_per_epoch,
                          **{f"test_{c}": v for c, v in zip(columns, vals[1:])},
                          "lr": self.lr_at(self.cfg, self.step - 1, self.steps_per_epoch),
                          "seconds": seconds, "sec_per_step": seconds / self.steps_per_epoch})
        self.loss_sum.zero_()
        if self.progress:
            shown = "  ".join(f"test_{c} {self.net.task.show(c, v)}"
                             for c, v in zip(columns, vals[1:]))
            tqdm.write(f"epoch {epoch + 1}/{self.cfg.epochs}  {self.cfg.method} K={self.net.k} "
                       f"pipeline x{self.world}  train_loss {self.rows[-1]['train_loss']:.4f}  "
                       f"{shown}  {seconds:.1f}s")
        self._checkpoint(epoch + 1)
        if signum:
            raise self._stopped(int(signum))

    def _stopped(self, signum: int) -> Stopped:
        """Every rank stops here, after the same checkpoint: leave together."""
        import signal

        close_group(self.timeout)
        return Stopped(signum, f"stopped by {signal.Signals(signum).name}; checkpoint at "
                               f"{self.saved_at} in {self.out} (continue with: torchrun "
                               f"--nproc-per-node {self.world} -m locallearn train --resume "
                               f"--out {self.out})")

    def _summary(self) -> Dict[str, Any]:
        from ..train import summarize

        if not self.main:
            return {}
        return summarize(self.cfg, self.net, self.rows, self.wall, self.device, self.data)

    def close(self) -> None:
        # no flush here: on an error a peer may never take our sends; exiting closes the
        # connections, which is how the other ranks learn of it
        if self.bar is not None:
            self.bar.close()
